//! Helpers shared by the integration tests (see `it/`).
