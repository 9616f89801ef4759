//! Dev tool: writes a synthetic Talos release as an OCI image layout (see `src/fixture`).
fn main() {}
