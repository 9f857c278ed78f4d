"""The browser guard itself: it must catch what the browser tests rely on it to catch."""

import pytest
from playwright.sync_api import Browser
from playwright.sync_api import Error as PlaywrightError

from tests.support.browser import BrowserGuard, ProxySink, guarded_page, is_loopback


def test_loopback_is_told_from_other_hosts() -> None:
    for url in ("http://127.0.0.1:8000/docs", "http://[::1]/", "http://localhost/x", "data:,"):
        assert is_loopback(url), url
    for url in ("https://cdn.jsdelivr.net/x.js", "http://10.0.0.1/", "http://127.0.0.1.nip.io/"):
        assert not is_loopback(url), url


def test_a_request_to_another_host_is_blocked_and_fails_the_check(chromium: Browser) -> None:
    guard = BrowserGuard()
    with guarded_page(chromium, guard, "http://127.0.0.1:9") as page:
        page.set_content('<img src="https://cdn.example.com/logo.png">')
        page.wait_for_load_state("load")
    assert guard.foreign == ["https://cdn.example.com/logo.png"]
    with pytest.raises(AssertionError, match="cdn.example.com"):
        guard.check()


def test_console_errors_fail_the_check_unless_allowed(chromium: Browser) -> None:
    guard = BrowserGuard()
    with guarded_page(chromium, guard, "http://127.0.0.1:9") as page:
        page.evaluate("console.error('expected trouble')")
        page.evaluate("setTimeout(() => { throw new Error('uncaught trouble') })")
        page.wait_for_timeout(200)
    with pytest.raises(AssertionError, match="expected trouble"):
        guard.check()
    guard.allow_console_error("expected trouble")
    with pytest.raises(AssertionError, match="uncaught trouble"):
        guard.check()
    guard.allow_console_error("uncaught trouble")
    guard.check()


def test_what_routing_does_not_see_goes_to_the_sink_not_the_network(
    chromium: Browser, proxy_sink: ProxySink
) -> None:
    """A context without the guard's routing stands for the browser's own traffic."""
    context = chromium.new_context()
    try:
        with pytest.raises(PlaywrightError, match="ERR_"):
            context.new_page().goto("https://updates.example.com/check")
        with pytest.raises(PlaywrightError, match="ERR_"):
            context.new_page().goto("http://192.0.2.1/")  # an address: no name to resolve
    finally:
        context.close()
    assert {"updates.example.com:443", "http://192.0.2.1/"} <= set(proxy_sink.targets)
