"""What several test modules share: data builders, a live server, a guarded browser page."""
