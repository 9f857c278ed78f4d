"""Shared by the hostile-input tests: the reliability checklist, raw ASGI requests, body scans,
side-effect snapshots and memory peaks."""

import asyncio
import contextlib
import json
import re
from pathlib import Path
from urllib.parse import unquote

import psutil
from fastapi import FastAPI

# Each class of abuse the service is built to survive, and the tests that defend it
# ("module::test"); `test_abuse.py` checks that every named test exists.
RELIABILITY_CHECKLIST: dict[str, list[str]] = {
    "request bodies over their caps are 413 before they are stored": [
        "test_hostile_uploads::test_dataset_upload_over_the_cap_is_413_and_leaves_nothing",
        "test_hostile_uploads::test_predict_body_over_the_cap_is_413",
        "test_hostile_uploads::test_json_body_over_the_cap_is_413_and_creates_no_job",
    ],
    "dataset files: pickles, huge shapes, bombs, zip slip are refused without side effects": [
        "test_hostile_uploads::test_npz_with_pickled_object_array_is_refused_without_running_it",
        "test_hostile_uploads::test_npz_declaring_a_huge_shape_is_413_before_allocating",
        "test_hostile_uploads::test_idx_gzip_bomb_is_413_after_reading_only_the_cap",
        "test_hostile_uploads::test_hostile_image_zips_are_refused_and_write_nothing",
    ],
    "image bombs are 413 from the header": [
        "test_hostile_uploads::test_decompression_bomb_is_413_well_under_a_second",
    ],
    "memory per predict request is bounded (decoded pixels per request, one at a time)": [
        "test_abuse::test_predict_memory_is_bounded_per_request_whatever_the_images_declare",
    ],
    "error replies stay small and are built off the event loop": [
        "test_abuse::test_validation_error_replies_stay_small_and_health_stays_fast",
        "test_abuse::test_validation_error_list_is_capped_with_a_count_of_the_rest",
    ],
    "the predict concurrency slot is taken before any body is read": [
        "test_abuse::test_predict_slot_is_taken_before_json_bodies_are_read",
        "test_abuse::test_stalled_predict_bodies_hold_the_slots_and_the_next_is_503_unread",
        "test_overload::test_predictions_beyond_the_concurrency_limit_get_503_with_retry_after_at_once",
    ],
    "user strings are plain text wherever they are rendered": [
        "test_abuse::test_cost_plot_draws_a_job_name_as_plain_text",
        "test_evaluate::test_heat_map_draws_user_strings_as_plain_text",
    ],
    "every integer is bounded; no non-finite number in or out": [
        "test_abuse::test_integers_beyond_64_bits_are_422",
        "test_abuse::test_huge_last_event_id_is_422_before_the_stream_starts",
        "test_abuse::test_instances_not_finite_in_float32_are_422",
        "test_abuse::test_predictions_never_carry_a_non_finite_number",
    ],
    "reads and writes from rebound host names are refused without an API key": [
        "test_abuse::test_reads_through_a_rebound_host_name_are_refused_without_an_api_key",
        "test_security::test_dns_rebound_page_is_refused_unless_an_api_key_guards_the_service",
    ],
    "cost histories: stored bounded, thinned and paged in SQL, streams send what they need": [
        "test_abuse::test_a_long_cost_history_is_stored_bounded_and_every_read_is_capped",
        "test_abuse::test_streams_of_a_long_history_send_what_they_ask_for_and_health_stays_fast",
        "test_abuse::test_checkpoints_keep_no_iterations_so_they_do_not_grow",
    ],
    "one server per data dir: a second one refuses to start and changes nothing": [
        "test_abuse::test_a_second_server_on_the_same_data_dir_refuses_to_start_and_touches_nothing",
        "test_abuse::test_the_data_dir_lock_is_released_when_its_server_stops",
    ],
    "damaged or missing metadata is skipped, logged and reported; orphans are quarantined": [
        "test_abuse::test_damaged_metadata_and_a_lost_jobs_database_cost_no_model",
        "test_abuse::test_servers_sharing_a_data_dir_quarantine_replaced_models_and_never_delete_one",
    ],
    "slow and idle clients are cut off; concurrent uploads are bounded": [
        "test_abuse::test_idle_and_slow_header_connections_are_closed",
        "test_abuse::test_stalled_uploads_time_out_and_concurrent_uploads_are_bounded",
    ],
}

# What must never appear in a response body: tracebacks, source locations, server paths,
# library internals.
LEAK = re.compile(
    r"Traceback|File \"|site-packages|/work/|/home/|/usr/|/tmp/|\.py\b|<class |"
    r"<function |object at 0x|numpy\.|PIL\.|starlette\.|fastapi\.|pydantic_core"
)


def assert_clean(text: str) -> None:
    """The body leaks no traceback, path or library internals, and is strict JSON if JSON."""
    assert not LEAK.search(text), text
    if text.startswith(("{", "[")):
        json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))


def raw_request(
    app: FastAPI,
    method: str,
    raw_path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> tuple[int, bytes, int]:
    """Send one request straight to the ASGI app, as a server would pass it: the path is not
    normalised (`..` stays), only percent-decoded once. Returns (status, body, how many times
    the app asked for the request body)."""
    reads = 0
    sent: dict = {"status": 0, "body": b""}

    async def receive() -> dict:
        nonlocal reads
        reads += 1
        if reads == 1:
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # a client that sends nothing more
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        elif message["type"] == "http.response.body":
            sent["body"] += message.get("body", b"")

    path, _, query = raw_path.partition("?")
    header_list = [(b"host", b"127.0.0.1:8000")] + [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(path),
        "raw_path": path.encode("latin-1"),
        "query_string": query.encode(),
        "root_path": "",
        "headers": header_list,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(app(scope, receive, send))
    return sent["status"], sent["body"], reads


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its content: a snapshot to compare before and after."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def open_fds_under(directory: Path) -> list[str]:
    """Files under `directory` this process still holds open (deleted ones included)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:
            continue
        if str(target).startswith(str(directory)):
            found.append(str(target))
    return found


def _process_tree(pid: int) -> list[int]:
    root = psutil.Process(pid)
    return [root.pid] + [child.pid for child in root.children(recursive=True)]


def reset_peak_rss(pid: int) -> None:
    """Reset the peak-RSS mark (VmHWM) of `pid` and its descendants to their current RSS."""
    for member in _process_tree(pid):
        with contextlib.suppress(OSError):
            Path(f"/proc/{member}/clear_refs").write_text("5")


def peak_rss_mb(pid: int) -> float:
    """Sum of the peak RSS (VmHWM) of `pid` and its descendants since the last reset, in MB."""
    total = 0
    for member in _process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return total / 1024
