//! Read-only TFTP server for the embedded iPXE binaries (filled in by the network-boot work).
