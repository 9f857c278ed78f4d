"""A loopback TCP proxy whose connections a test can cut all at once, as a flaky network or a
load balancer would, while the server behind it keeps running."""

import contextlib
import socket
import struct
import threading


class CuttingProxy:
    """Forwards 127.0.0.1:`port` (`url`) to 127.0.0.1:`target_port`. `requests` keeps the first
    bytes each connection sent (its request line and headers); `cut()` resets every open
    connection while new ones are still accepted."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[bytes] = []
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.sockets |= {client, upstream}
            for source, sink, first in (
                (client, upstream, self.requests),
                (upstream, client, None),
            ):
                threading.Thread(target=self._pipe, args=(source, sink, first), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, first: list | None) -> None:
        """Copy source to sink until either end closes; the first chunk also goes to `first`."""
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                if first is not None:
                    first.append(chunk)
                    first = None
                sink.sendall(chunk)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> int:
        """Reset every open connection; how many sockets were cut."""
        with self.lock:
            cut, self.sockets = self.sockets, set()
        for sock in cut:
            with contextlib.suppress(OSError):
                # Linger 0: close with a reset, as a broken network path looks to both ends.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        return len(cut)

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        self.thread.join(timeout=5)
        self.cut()
