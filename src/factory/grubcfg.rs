//! The `grub.cfg` files of GRUB and dual-boot disk images and of GRUB/hybrid ISOs, byte for
//! byte as Talos' imager writes them (`docs/formats.md` §GRUB configuration).
//!
//! Two templates: the disk one (`/grub/grub.cfg` on `BOOT`, boot entry `A - Talos <v>` and a
//! reset entry wiping `EPHEMERAL` and `STATE`, two-space indent) and the ISO one
//! (`/boot/grub/grub.cfg`, `Talos ISO` and `Reset Talos installation`, tab indent). Both put
//! the command line through [`quote`], GRUB's word quoting as Talos does it.

/// Backslash-escapes each of `\ { } & $ | ; < > "`, as Talos' `grub.Quote` does (spaces stay:
/// the command line is several words on the `linux` line).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if matches!(
            c,
            '\\' | '{' | '}' | '&' | '$' | '|' | ';' | '<' | '>' | '"'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The reset entry of disk images exists for Talos ≥ 1.4
/// ([`super::quirks::Quirks::supports_reset_grub_option`]; dual-boot images are ≥ 1.10).
///
/// `vtag` is the version tag (`v1.11.6`), `cmdline` the image's command line, `reset` whether
/// the reset entry is there.
pub fn disk_grub_cfg(vtag: &str, cmdline: &str, reset: bool) -> String {
    let title = format!("A - Talos {vtag}");
    let args = quote(cmdline);
    let mut cfg = format!(
        "set default=\"{title}\"\n\
         \n\
         set timeout=3\n\
         \n\
         insmod all_video\n\
         \n\
         terminal_input console\n\
         terminal_output console\n\
         \n\
         menuentry \"{title}\" {{\n\
         \x20 set gfxmode=auto\n\
         \x20 set gfxpayload=text\n\
         \x20 linux /A/vmlinuz {args}\n\
         \x20 initrd /A/initramfs.xz\n\
         }}\n"
    );
    if reset {
        cfg.push_str(&format!(
            "menuentry \"Reset Talos installation and return to maintenance mode\" {{\n\
             \x20 set gfxmode=auto\n\
             \x20 set gfxpayload=text\n\
             \x20 linux /A/vmlinuz {args} talos.experimental.wipe=system:EPHEMERAL,STATE\n\
             \x20 initrd /A/initramfs.xz\n\
             }}\n"
        ));
    }
    cfg
}

/// `/boot/grub/grub.cfg` of GRUB and hybrid ISOs (the reset entry exists for Talos ≥ 1.4,
/// i.e. always here).
pub fn iso_grub_cfg(cmdline: &str) -> String {
    let args = quote(cmdline);
    format!(
        "set default=0\n\
         set timeout=3\n\
         \n\
         insmod all_video\n\
         \n\
         terminal_input console\n\
         terminal_output console\n\
         \n\
         menuentry \"Talos ISO\" {{\n\
         \tset gfxmode=auto\n\
         \tset gfxpayload=text\n\
         \tlinux /boot/vmlinuz {args}\n\
         \tinitrd /boot/initramfs.xz\n\
         }}\n\
         \n\
         menuentry \"Reset Talos installation\" {{\n\
         \tset gfxmode=auto\n\
         \tset gfxpayload=text\n\
         \tlinux /boot/vmlinuz {args} talos.experimental.wipe=system\n\
         \tinitrd /boot/initramfs.xz\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_grub_specials_only() {
        assert_eq!(quote("a b=c"), "a b=c");
        assert_eq!(quote(r#"x\{}&$|;<>"y"#), r#"x\\\{\}\&\$\|\;\<\>\"y"#);
    }

    #[test]
    fn disk_cfg_matches_the_imager_template() {
        let without = disk_grub_cfg("v1.3.7", "talos.platform=metal", false);
        assert!(!without.contains("Reset"), "{without}");
        assert!(
            without.ends_with("  initrd /A/initramfs.xz\n}\n"),
            "{without}"
        );
        let cfg = disk_grub_cfg("v1.11.6", "talos.platform=metal console=tty0 x=$y", true);
        let want = "set default=\"A - Talos v1.11.6\"\n\nset timeout=3\n\ninsmod all_video\n\nterminal_input console\nterminal_output console\n\nmenuentry \"A - Talos v1.11.6\" {\n  set gfxmode=auto\n  set gfxpayload=text\n  linux /A/vmlinuz talos.platform=metal console=tty0 x=\\$y\n  initrd /A/initramfs.xz\n}\nmenuentry \"Reset Talos installation and return to maintenance mode\" {\n  set gfxmode=auto\n  set gfxpayload=text\n  linux /A/vmlinuz talos.platform=metal console=tty0 x=\\$y talos.experimental.wipe=system:EPHEMERAL,STATE\n  initrd /A/initramfs.xz\n}\n";
        assert_eq!(cfg, want);
    }

    #[test]
    fn iso_cfg_matches_the_imager_template() {
        let cfg = iso_grub_cfg("talos.platform=metal");
        assert!(cfg.starts_with("set default=0\nset timeout=3\n\ninsmod all_video\n"));
        assert!(cfg.contains(
            "menuentry \"Talos ISO\" {\n\tset gfxmode=auto\n\tset gfxpayload=text\n\tlinux /boot/vmlinuz talos.platform=metal\n\tinitrd /boot/initramfs.xz\n}\n\nmenuentry \"Reset Talos installation\" {\n"
        ));
        assert!(cfg.ends_with(
            "\tlinux /boot/vmlinuz talos.platform=metal talos.experimental.wipe=system\n\tinitrd /boot/initramfs.xz\n}\n"
        ));
    }
}
