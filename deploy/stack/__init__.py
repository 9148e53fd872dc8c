"""The local stack: ``tsdemo up``, ``down`` and ``status``, the real servers and our services on this machine."""
