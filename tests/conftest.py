"""The browser fixtures (`live_page` and its kin) for every test package."""

pytest_plugins = ["tests.support.browser"]
