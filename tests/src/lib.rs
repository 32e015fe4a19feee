//! End-to-end tests live in `tests/tests/`: they start the real `sark-pdp` binary and talk to it.
