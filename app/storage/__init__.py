"""Where jobs, datasets and models live: small interfaces and their embedded defaults."""
