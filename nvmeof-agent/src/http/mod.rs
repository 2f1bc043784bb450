//! The HTTP side: `/metrics` and `/healthz`.
