//! Proxy-DHCP responder for PXE and UEFI HTTP-boot clients (filled in by the network-boot work).
