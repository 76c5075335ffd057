//! Real Lambda runtime clients served by nimbus-process: the `lambda-fixture` binary and the tests that drive the real clients (see `tests/`).
