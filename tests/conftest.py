"""Session-wide test setup."""

from __future__ import annotations

import signal

# A shell that starts a background job without job control (`nohup pytest &`, some CI
# runners) makes it ignore SIGINT, and an ignored signal stays ignored across exec: every
# Python the tests start would then ignore the Ctrl-C the signal tests send. Python's own
# handler in this process is reset to the default in exec'd children.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
