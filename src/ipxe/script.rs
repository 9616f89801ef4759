//! iPXE scripts: upstream's `/pxe` script shape, and the per-machine `/boot/{mac}.ipxe`
//! scripts that chain to it.

/// What the factory's `/pxe` script boots.
#[derive(Debug, Clone)]
pub struct PxeScript<'a> {
    /// `<externalPXEURL>/image/<schematic>/<version>`.
    pub image_base: &'a str,
    /// `amd64` or `arm64`.
    pub arch: &'a str,
    /// The platform (`metal`), used by the secure-boot UKI name.
    pub platform: &'a str,
    /// The kernel command line.
    pub cmdline: &'a str,
    /// Boot the secure-boot UKI instead of kernel + initramfs.
    pub secure_boot: bool,
}

impl PxeScript<'_> {
    /// The script, byte-for-byte in upstream Image Factory's shape.
    pub fn render(&self) -> String {
        let PxeScript {
            image_base: base,
            arch,
            platform,
            cmdline,
            secure_boot,
        } = self;
        if *secure_boot {
            format!(
                "#!ipxe\n\nimgfree\nkernel {base}/{platform}-{arch}-secureboot-uki.efi {cmdline}\nboot\n"
            )
        } else {
            format!(
                "#!ipxe\n\nimgfree\nkernel {base}/kernel-{arch} {cmdline}\ninitrd {base}/initramfs-{arch}.xz\nboot\n"
            )
        }
    }
}

/// How many times a machine's script retries fetching its boot script before giving up.
pub const CHAIN_ATTEMPTS: u32 = 5;

/// The HTTP route of the per-machine boot script, `/boot/<mac>.ipxe`. Proxy-DHCP hands out
/// [`boot_script_path`] and the HTTP side serves this route: both take the name from here.
pub const BOOT_SCRIPT_ROUTE: &str = "/boot/{file}";

/// The path of a machine's boot script: `/boot/aa:bb:cc:dd:ee:ff.ipxe` (`mac` is a
/// `crate::mac::MacAddr`, written in its one text form).
pub fn boot_script_path(mac: impl std::fmt::Display) -> String {
    format!("/boot/{mac}.ipxe")
}

/// The MAC text of a [`BOOT_SCRIPT_ROUTE`] file name (`<mac>.ipxe` → `<mac>`), unparsed.
pub fn boot_script_mac(file: &str) -> Option<&str> {
    file.strip_suffix(".ipxe")
}

/// A script that chains `url` (the assigned `/pxe/…` script), retrying a few times — the
/// first request for a new schematic may wait for a build, and networks blink.
pub fn chain(comment: &str, url: &str) -> String {
    format!(
        "#!ipxe\n\
         # bootfactory: {comment}\n\
         set bf-attempt:int32 0\n\
         :bf-retry\n\
         chain --autofree {url} && goto bf-done ||\n\
         inc bf-attempt\n\
         iseq ${{bf-attempt}} {CHAIN_ATTEMPTS} && goto bf-failed ||\n\
         echo bootfactory: fetching {url} failed, retrying in 5 seconds\n\
         sleep 5\n\
         goto bf-retry\n\
         :bf-failed\n\
         echo bootfactory: giving up after {CHAIN_ATTEMPTS} attempts; back to the firmware\n\
         exit 1\n\
         :bf-done\n",
        comment = one_line(comment),
    )
}

/// A script that hands the machine back to its firmware, which boots the next device.
pub fn exit_to_firmware(reason: &str) -> String {
    format!(
        "#!ipxe\n# bootfactory: {}\necho bootfactory: {}; booting from the next device\nexit\n",
        one_line(reason),
        one_line(reason)
    )
}

/// Keeps text that ends up in a script on one line and free of iPXE expansions.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\r' | '$' | '{' | '}' => ' ',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_script_names_round_trip() {
        let path = boot_script_path("52:54:00:ab:cd:ef");
        assert_eq!(path, "/boot/52:54:00:ab:cd:ef.ipxe");
        let file = path.strip_prefix("/boot/").unwrap();
        assert_eq!(boot_script_mac(file), Some("52:54:00:ab:cd:ef"));
        assert_eq!(boot_script_mac("52:54:00:ab:cd:ef"), None);
        assert!(BOOT_SCRIPT_ROUTE.starts_with("/boot/"));
    }

    #[test]
    fn pxe_script_matches_upstream_shape() {
        let s = PxeScript {
            image_base: "https://f.example/image/abc/v1.8.4",
            arch: "amd64",
            platform: "metal",
            cmdline: "talos.platform=metal console=tty0",
            secure_boot: false,
        };
        assert_eq!(
            s.render(),
            "#!ipxe\n\nimgfree\nkernel https://f.example/image/abc/v1.8.4/kernel-amd64 talos.platform=metal console=tty0\ninitrd https://f.example/image/abc/v1.8.4/initramfs-amd64.xz\nboot\n"
        );
        let sb = PxeScript {
            secure_boot: true,
            ..s
        };
        assert_eq!(
            sb.render(),
            "#!ipxe\n\nimgfree\nkernel https://f.example/image/abc/v1.8.4/metal-amd64-secureboot-uki.efi talos.platform=metal console=tty0\nboot\n"
        );
    }

    #[test]
    fn chain_script_retries_then_exits() {
        let s = chain(
            "52:54:00:00:00:01 → x",
            "http://192.0.2.10:8080/pxe/a/v1.8.4/metal-amd64",
        );
        assert!(s.starts_with("#!ipxe\n"));
        assert!(s.contains(
            "chain --autofree http://192.0.2.10:8080/pxe/a/v1.8.4/metal-amd64 && goto bf-done ||\n"
        ));
        assert!(s.contains(&format!(
            "iseq ${{bf-attempt}} {CHAIN_ATTEMPTS} && goto bf-failed"
        )));
        assert!(s.contains("exit 1\n"));
    }

    #[test]
    fn comments_cannot_inject_commands() {
        let s = exit_to_firmware("x\nshell ${evil}");
        assert_eq!(s.lines().filter(|l| l.trim() == "shell").count(), 0);
        assert!(!s.contains("${evil}"));
        assert!(s.ends_with("exit\n"));
    }
}
