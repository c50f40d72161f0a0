//! Reading one sysfs device directory through a directory descriptor.
//!
//! A [`Node`] holds its device directory open: every attribute is read
//! relative to it (`openat`, `readlinkat`), which spares the kernel the
//! walk down `/sys/devices/…` on each read and pins the device the scan
//! started on. Once the kernel removes that device, every lookup below the
//! descriptor fails, so [`Node::alive`] at the end of a device tells a
//! device that vanished mid-read (dropped) from one that merely lacks an
//! attribute (kept, with that field `None`).

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags};

/// Longest attribute read: sysfs attributes are at most one page; this
/// also bounds what a broken fixture file can make the scan allocate.
const MAX_ATTR: usize = 64 * 1024;

/// One device directory of sysfs, open.
#[derive(Debug)]
pub(crate) struct Node {
    /// Kernel name: the class entry's name (`sda`, `eth0`, `event3`).
    pub(crate) name: String,
    /// Where the directory really lives, relative to the sysfs root and
    /// resolved lexically (`devices/pci0000:00/0000:00:03.0/virtio2/net/eth0`),
    /// or the class entry itself when it is not a symlink.
    pub(crate) rel: String,
    fd: OwnedFd,
}

impl Node {
    /// Opens entry `name` of the sysfs folder `dir_rel` (`class/net`).
    /// `None` when it is not a directory any more (gone since the listing)
    /// or its name is not UTF-8 (no kernel device name is).
    pub(crate) fn open(sys_root: &Path, dir_rel: &str, name: &OsStr) -> Option<Self> {
        let name = name.to_str()?.to_owned();
        let entry = sys_root.join(dir_rel).join(&name);
        let rel = match rustix::fs::readlink(&entry, Vec::new()) {
            Ok(target) => resolve(dir_rel, &String::from_utf8_lossy(target.as_bytes()))?,
            Err(_) => format!("{dir_rel}/{name}"),
        };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(&entry, flags, Mode::empty()).ok()?;
        Some(Self { name, rel, fd })
    }

    /// Attribute `path` (relative, may go through links: `device/model`),
    /// trimmed; `None` when absent, unreadable, empty or not UTF-8.
    pub(crate) fn attr(&self, path: &str) -> Option<String> {
        let bytes = self.attr_bytes(path)?;
        let text = std::str::from_utf8(&bytes).ok()?.trim();
        (!text.is_empty()).then(|| text.to_owned())
    }

    /// Attribute `path` parsed as an unsigned number (decimal, or hex
    /// with `0x`).
    pub(crate) fn attr_u64(&self, path: &str) -> Option<u64> {
        parse_u64(&self.attr(path)?)
    }

    /// Raw bytes of attribute `path`.
    pub(crate) fn attr_bytes(&self, path: &str) -> Option<Vec<u8>> {
        // NONBLOCK: a FIFO in a fixture tree must not hang the scan; NOCTTY:
        // never become a terminal's controlling process by accident.
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = rustix::fs::openat(&self.fd, path, flags, Mode::empty()).ok()?;
        let mut out = Vec::new();
        let mut chunk = [0_u8; 4096];
        loop {
            let n = rustix::io::read(&fd, &mut chunk).ok()?;
            out.extend_from_slice(&chunk[..n]);
            // sysfs hands over the whole attribute in the first read, and a
            // regular file reads short only at its end: a short read is the
            // end, which spares sysfs a second read returning 0.
            if n < chunk.len() || out.len() >= MAX_ATTR {
                break;
            }
        }
        Some(out)
    }

    /// Whether `path` exists below the device.
    pub(crate) fn has(&self, path: &str) -> bool {
        rustix::fs::statat(&self.fd, path, AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }

    /// The target of the symlink `path` below the device, resolved
    /// lexically against this device's [`Self::rel`].
    pub(crate) fn link(&self, path: &str) -> Option<String> {
        let target = rustix::fs::readlinkat(&self.fd, path, Vec::new()).ok()?;
        let target = String::from_utf8_lossy(target.as_bytes());
        // The link lives in the folder holding the last component of `path`.
        let base = match path.rsplit_once('/') {
            Some((dir, _)) => resolve(&self.rel, dir)?,
            None => self.rel.clone(),
        };
        resolve(&base, &target)
    }

    /// The last component of the symlink `path` (`device/driver` → `e1000e`).
    pub(crate) fn link_name(&self, path: &str) -> Option<String> {
        let target = rustix::fs::readlinkat(&self.fd, path, Vec::new()).ok()?;
        let target = String::from_utf8_lossy(target.as_bytes());
        target.rsplit('/').next().filter(|n| !n.is_empty()).map(str::to_owned)
    }

    /// Names of the entries of folder `path` below the device.
    pub(crate) fn list(&self, path: &str) -> Vec<String> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let Ok(fd) = rustix::fs::openat(&self.fd, path, flags, Mode::empty()) else { return Vec::new() };
        let Ok(dir) = rustix::fs::Dir::read_from(&fd) else { return Vec::new() };
        dir.filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().ok().map(str::to_owned))
            .filter(|n| n != "." && n != "..")
            .collect()
    }

    /// Whether the device still exists: every sysfs device folder has a
    /// `uevent` file, and lookups below a removed folder fail.
    pub(crate) fn alive(&self) -> bool {
        self.has("uevent")
    }

    /// [`Self::rel`] below `devices/` (`pci0000:00/0000:00:03.0/virtio2/net/eth0`).
    pub(crate) fn bus_path_of(rel: &str) -> &str {
        rel.strip_prefix("devices/").unwrap_or(rel)
    }
}

/// Joins a relative symlink `target` to the folder `base` (both relative to
/// the sysfs root) without touching the file system. sysfs folders are
/// never symlinks themselves above a class entry, so `..` is exact here.
/// `None` for absolute targets or a `..` above the root.
pub(crate) fn resolve(base: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// The folder holding `rel` (`devices/x/block/vda/vda1` → `devices/x/block/vda`).
pub(crate) fn parent(rel: &str) -> Option<&str> {
    rel.rsplit_once('/').map(|(dir, _)| dir)
}

/// The last component of `rel`.
pub(crate) fn base_name(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

/// A sysfs number: decimal, or hex with a `0x` prefix.
pub(crate) fn parse_u64(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// A hardware id as lspci and lsusb print it: lowercase hex without `0x`,
/// at least four digits (`0x8086` → `8086`, `46D` → `046d`). `None` unless
/// the text is hex.
pub(crate) fn hex_id(text: &str) -> Option<String> {
    let hex = text.trim().trim_start_matches("0x").trim_start_matches("0X");
    let value = u32::from_str_radix(hex, 16).ok()?;
    Some(format!("{value:04x}"))
}

/// Whether a file exists at `root/rel` (any type), without following a
/// final symlink.
pub(crate) fn exists(root: &Path, rel: &str) -> bool {
    std::fs::symlink_metadata(root.join(rel)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_lexically() {
        assert_eq!(
            resolve("class/net", "../../devices/pci0000:00/0000:00:03.0/virtio2/net/eth0").as_deref(),
            Some("devices/pci0000:00/0000:00:03.0/virtio2/net/eth0")
        );
        assert_eq!(
            resolve("devices/pci0000:00/0000:00:02.0/drm/card0", "../../../0000:00:02.0").as_deref(),
            Some("devices/pci0000:00/0000:00:02.0")
        );
        assert_eq!(resolve("a/b", "./c//d").as_deref(), Some("a/b/c/d"));
        assert_eq!(resolve("a", "../../x"), None);
        assert_eq!(resolve("a", "/sys/devices/x"), None);
        assert_eq!(parent("devices/x/block/vda/vda1"), Some("devices/x/block/vda"));
        assert_eq!(base_name("devices/x/usb1/1-1"), "1-1");
        assert_eq!(Node::bus_path_of("devices/pci0000:00/x"), "pci0000:00/x");
    }

    #[test]
    fn numbers_and_ids_parse() {
        assert_eq!(parse_u64(" 42\n"), Some(42));
        assert_eq!(parse_u64("0x1af4"), Some(0x1af4));
        assert_eq!(parse_u64("12a"), None);
        assert_eq!(parse_u64(""), None);
        assert_eq!(hex_id("0x8086").as_deref(), Some("8086"));
        assert_eq!(hex_id("46D").as_deref(), Some("046d"));
        assert_eq!(hex_id("zz"), None);
    }

    #[test]
    fn nodes_read_attributes_links_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let dev = root.join("devices/platform/thing");
        std::fs::create_dir_all(dev.join("sub")).unwrap();
        std::fs::write(dev.join("uevent"), "").unwrap();
        std::fs::write(dev.join("model"), "  Model X \n").unwrap();
        std::fs::write(dev.join("empty"), "\n").unwrap();
        std::fs::write(dev.join("big"), "y".repeat(10_000)).unwrap();
        std::fs::create_dir_all(root.join("devices/platform/drv")).unwrap();
        std::os::unix::fs::symlink("../drv", dev.join("driver")).unwrap();
        std::fs::create_dir_all(root.join("class/thing")).unwrap();
        std::os::unix::fs::symlink("../../devices/platform/thing", root.join("class/thing/t0")).unwrap();

        let node = Node::open(root, "class/thing", OsStr::new("t0")).unwrap();
        assert_eq!(node.rel, "devices/platform/thing");
        assert_eq!(node.attr("model").as_deref(), Some("Model X"));
        assert_eq!(node.attr("empty"), None);
        assert_eq!(node.attr("missing"), None);
        assert_eq!(node.attr("sub"), None, "a folder is no attribute");
        assert_eq!(node.attr("big").map(|s| s.len()), Some(10_000));
        assert_eq!(node.link("driver").as_deref(), Some("devices/platform/drv"));
        assert_eq!(node.link_name("driver").as_deref(), Some("drv"));
        assert!(node.has("sub") && !node.has("nope"));
        assert!(node.list(".").contains(&"model".to_owned()));
        assert!(node.alive());
        std::fs::remove_dir_all(&dev).unwrap();
        assert!(!node.alive(), "a removed folder is gone for the open descriptor too");
        assert_eq!(node.attr("model"), None);
        assert!(Node::open(root, "class/thing", OsStr::new("t0")).is_none(), "dangling entry");
    }
}
