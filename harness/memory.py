"""Peak memory of a running server's processes, sampled in the background."""
from __future__ import annotations

import threading


class MemoryWatch:
    """Samples the RSS (and, less often, PSS) of every process of `server` (anything with
    rss_bytes() and pss_bytes(): a GunicornServer, or nginx in front of one) and
    keeps the peaks. RSS sums count pages shared by the preloaded master and its workers once
    per process; PSS splits them, so its sum is the memory really used."""

    def __init__(self, server, interval: float = 0.25):
        self.server, self.interval = server, interval
        self.baseline_rss = server.rss_bytes()
        self.baseline_pss = server.pss_bytes()
        self.peak_rss, self.peak_pss = self.baseline_rss, self.baseline_pss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(self.interval):
            self.peak_rss = max(self.peak_rss, self.server.rss_bytes())
            tick += 1
            if tick % 8 == 0:  # PSS reads /proc/*/smaps: ~0.1 s of CPU, so only now and then
                self.peak_pss = max(self.peak_pss, self.server.pss_bytes())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
