"""The stop request behind `elit train`'s SIGTERM / Ctrl-C handling (elit.train.stop), in process:
the first signal only asks, a quick repeat (torchrun forwarding the Ctrl-C the terminal already
sent) is the same request, a later Ctrl-C stops at once, and the handlers before are restored.
The whole path, with checkpoint and resume, is in test_train_resume.py and test_train_distributed.py."""
import os
import signal

import pytest
import torch

import elit.train.stop as S


def test_a_signal_asks_a_quick_repeat_is_the_same_request_and_a_late_ctrl_c_stops_at_once(monkeypatch):
    before = {s: signal.getsignal(s) for s in S.SIGNALS}
    with S.StopRequest() as stop:
        assert not stop.agreed(torch.device("cpu")) and stop.signal_name is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.agreed(torch.device("cpu")) and stop.signal_name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGINT)            # within FORCE_AFTER_S: not a second request
        assert stop.signal_name == "SIGTERM"
        monkeypatch.setattr(S, "FORCE_AFTER_S", -1.0)  # as if the user pressed Ctrl-C again later
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert {s: signal.getsignal(s) for s in S.SIGNALS} == before


def test_outside_the_main_thread_nothing_is_installed():
    import threading
    seen = {}

    def worker():
        with S.StopRequest() as stop:
            seen["installed"] = bool(stop.previous)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == {"installed": False}
