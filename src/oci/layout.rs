//! OCI image layout.
