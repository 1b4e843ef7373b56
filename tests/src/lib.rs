//! Nothing here: this crate holds Sluice's end-to-end tests (`e2e/`).
