"""The long-running lifecycles: ``supervise``, ``scheduled`` and ``event_driven``.

``cron`` reads schedules, ``base`` holds the interface between the kernel and a manager, ``host`` the kernel's side of
it, ``clock`` the real and the fake clock, and each lifecycle its own manager module.
"""
