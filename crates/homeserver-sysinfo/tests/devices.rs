//! `SysDeviceInventory` against the real `/sys` (compared with `ip -o link`
//! and `lsblk`) and against fixture trees laid out like sysfs (class
//! entries are relative symlinks into `devices/`, as the kernel makes them).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers outside #[test] fns panic on a broken host")]

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use homeserver_domain::{DeviceInventory, DeviceKind, DiscoveredDevice, device_id};
use homeserver_sysinfo::{DeviceScanConfig, SysDeviceInventory};

fn host() -> SysDeviceInventory {
    SysDeviceInventory::new(DeviceScanConfig::default())
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn require(tool: &str) -> bool {
    if run("which", &[tool]).is_some() {
        return true;
    }
    assert!(std::env::var("HOMESERVER_REQUIRE_ENGINES").as_deref() != Ok("1"), "{tool} is required");
    eprintln!("SKIP: `{tool}` not installed");
    false
}

fn of_kind(devices: &[DiscoveredDevice], kind: DeviceKind) -> BTreeMap<String, DiscoveredDevice> {
    devices.iter().filter(|d| d.kind == kind).map(|d| (d.name.clone(), d.clone())).collect()
}

// ------------------------------------------------------------ real host

/// `ip -o link` as `name → MAC` (`None` for `link/none` and all-zero MACs).
fn ip_links() -> BTreeMap<String, Option<String>> {
    let text = run("ip", &["-o", "link"]).expect("ip -o link");
    let mut links = BTreeMap::new();
    for line in text.lines() {
        // `7: veth1@if6: <…> … link/ether 4e:99:… brd …`
        let mut fields = line.split(": ");
        let name = fields.nth(1).expect("name field");
        let name = name.split('@').next().unwrap().to_owned();
        let mac = line
            .split_whitespace()
            .skip_while(|w| !w.starts_with("link/"))
            .nth(1)
            .filter(|m| m.len() == 17 && m.bytes().filter(|b| *b == b':').count() == 5)
            .filter(|m| *m != "00:00:00:00:00:00")
            .map(str::to_ascii_lowercase);
        links.insert(name, mac);
    }
    links
}

/// Interfaces come and go on this host (other tests start containers, each
/// with a veth): an attempt compares the scan with `ip` taken before and
/// after it, and only a change of the interface list between the two
/// forces another attempt.
#[test]
fn every_interface_of_ip_link_is_listed_with_its_mac_and_nothing_else() {
    if !require("ip") {
        return;
    }
    let inventory = host();
    let mut last = String::new();
    for _ in 0..10 {
        let before = ip_links();
        let scan = inventory.scan_blocking().unwrap();
        let after = ip_links();
        if before != after {
            last = format!("interfaces changed during the scan: {before:?} → {after:?}");
            continue;
        }
        let listed = of_kind(&scan, DeviceKind::Network);
        assert_eq!(
            listed.keys().collect::<Vec<_>>(),
            before.keys().collect::<Vec<_>>(),
            "the scan lists exactly the interfaces of `ip -o link`"
        );
        for (name, mac) in &before {
            let d = &listed[name];
            assert_eq!(&d.serial, mac, "MAC of {name}");
            assert!(d.path.is_none() && d.id.starts_with("network-"), "{d:?}");
            let physical = Path::new("/sys/class/net").join(name).join("device").exists();
            assert_eq!(d.attributes["type"], if physical { "physical" } else { "virtual" }, "{name}");
            let mtu = std::fs::read_to_string(format!("/sys/class/net/{name}/mtu")).unwrap_or_default();
            assert_eq!(d.attributes.get("mtu").map(String::as_str), Some(mtu.trim()).filter(|m| !m.is_empty()));
        }
        assert!(listed.contains_key("lo"));
        return;
    }
    panic!("no quiet moment in 10 attempts; last: {last}");
}

/// `lsblk -b -J -o NAME,SIZE,TYPE`, children included: `name → (size, type)`.
fn lsblk() -> BTreeMap<String, (u64, String)> {
    fn walk(list: &[serde_json::Value], out: &mut BTreeMap<String, (u64, String)>) {
        for d in list {
            let name = d["name"].as_str().expect("name").to_owned();
            let size = d["size"].as_u64().or_else(|| d["size"].as_str().and_then(|s| s.parse().ok())).expect("size");
            out.insert(name, (size, d["type"].as_str().expect("type").to_owned()));
            if let Some(children) = d["children"].as_array() {
                walk(children, out);
            }
        }
    }
    let text = run("lsblk", &["-b", "-J", "-o", "NAME,SIZE,TYPE"]).expect("lsblk");
    let json: serde_json::Value = serde_json::from_str(&text).expect("lsblk JSON");
    let mut out = BTreeMap::new();
    walk(json["blockdevices"].as_array().expect("blockdevices"), &mut out);
    out
}

/// lsblk hides loop devices without a backing file and RAM disks, as the
/// scan does; both sides must then list the same devices with the same
/// size, partitions as partitions.
#[test]
fn every_block_device_of_lsblk_is_listed_with_its_size() {
    if !require("lsblk") {
        return;
    }
    // Loop devices may be attached or detached by other jobs: take a scan
    // that `lsblk` agrees with before and after.
    let inventory = host();
    let (mut expected, mut scan) = (lsblk(), inventory.scan_blocking().unwrap());
    for _ in 0..5 {
        let after = lsblk();
        if after == expected {
            break;
        }
        (expected, scan) = (after, inventory.scan_blocking().unwrap());
    }
    let listed: BTreeMap<String, &DiscoveredDevice> = scan
        .iter()
        .filter(|d| matches!(d.kind, DeviceKind::Disk | DeviceKind::Partition))
        .map(|d| (d.name.clone(), d))
        .collect();
    assert_eq!(listed.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (name, (size, kind)) in &expected {
        let d = listed[name];
        let want = if kind == "part" { DeviceKind::Partition } else { DeviceKind::Disk };
        assert_eq!(d.kind, want, "{name} is a {kind}");
        assert_eq!(d.attributes["size_bytes"], size.to_string(), "size of {name}");
        assert_eq!(d.path.as_deref(), Some(format!("/dev/{name}").as_str()), "node of {name}");
        if d.kind == DeviceKind::Partition {
            let parent = &d.attributes["parent"];
            assert_eq!(d.attributes["parent_id"], listed[parent].id, "{name} points at {parent}");
        }
    }
}

/// Same names → same ids, across rescans and across inventories (a
/// restart); interfaces created between the scans do not disturb the others.
#[tokio::test]
async fn ids_are_the_same_across_rescans_and_restarts() {
    let first = host();
    let a = first.scan().await.unwrap();
    let b = first.scan().await.unwrap();
    let c = host().scan().await.unwrap();
    let ids = |v: &[DiscoveredDevice]| -> BTreeMap<(DeviceKind, String), String> {
        v.iter().map(|d| ((d.kind, d.name.clone()), d.id.clone())).collect()
    };
    let (a, b, c) = (ids(&a), ids(&b), ids(&c));
    let mut compared = 0;
    for (key, id) in &a {
        for other in [&b, &c] {
            if let Some(other_id) = other.get(key) {
                assert_eq!(id, other_id, "{key:?}");
                compared += 1;
            }
        }
    }
    assert!(compared >= 2 * 3, "at least lo, a disk and a partition or NIC compared twice: {a:?}");
    let unique: BTreeSet<&String> = a.values().collect();
    assert_eq!(unique.len(), a.len(), "ids are unique within a scan");
}

// -------------------------------------------------------------- fixtures

/// A fake `/sys` and `/dev` in a temporary folder.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Self {
        let tree = Self { dir: tempfile::tempdir().unwrap() };
        std::fs::create_dir_all(tree.sys().join("class")).unwrap();
        std::fs::create_dir_all(tree.dev()).unwrap();
        tree
    }

    fn sys(&self) -> PathBuf {
        self.dir.path().join("sys")
    }

    fn dev(&self) -> PathBuf {
        self.dir.path().join("dev")
    }

    fn inventory(&self) -> SysDeviceInventory {
        SysDeviceInventory::new(DeviceScanConfig { sys_root: self.sys(), dev_root: self.dev() })
    }

    /// Writes `sys/<rel>`, creating folders.
    fn write(&self, rel: &str, content: &str) {
        let path = self.sys().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// A device folder `sys/devices/<path>` with `uevent` and `attrs`.
    fn device(&self, path: &str, attrs: &[(&str, &str)]) {
        self.write(&format!("devices/{path}/uevent"), "");
        for (name, value) in attrs {
            self.write(&format!("devices/{path}/{name}"), &format!("{value}\n"));
        }
    }

    /// A relative symlink at `sys/<at>` pointing at `sys/<to>`, as sysfs
    /// makes them.
    fn link(&self, at: &str, to: &str) {
        let depth = at.matches('/').count();
        let target = format!("{}{to}", "../".repeat(depth));
        let path = self.sys().join(at);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&path);
        symlink(target, path).unwrap();
    }

    /// `sys/class/<class>/<name>` → `sys/devices/<path>`.
    fn class(&self, class: &str, name: &str, path: &str) {
        self.link(&format!("class/{class}/{name}"), &format!("devices/{path}"));
    }

    /// A device node `dev/<rel>` (an empty file will do).
    fn node(&self, rel: &str) {
        let path = self.dev().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "").unwrap();
    }

    fn remove(&self, rel: &str) {
        let path = self.sys().join(rel);
        if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(path).unwrap();
        } else {
            std::fs::remove_file(path).unwrap();
        }
    }
}

/// The kernel names and numbers a boot happened to hand out: everything
/// the ids must not depend on.
#[derive(Clone)]
struct Names {
    disk: &'static str,
    ata: &'static str,
    tty_usb: &'static str,
    usb_port: &'static str,
    devnum: u32,
    card: &'static str,
    event: &'static str,
    input: &'static str,
    hid: &'static str,
    nic: &'static str,
}

const BOOT_A: Names = Names {
    disk: "sda",
    ata: "ata1/host0/target0:0:0/0:0:0:0",
    tty_usb: "ttyUSB0",
    usb_port: "1-2",
    devnum: 5,
    card: "card1",
    event: "event4",
    input: "input7",
    hid: "0003:046D:C31C.0001",
    nic: "enp0s31f6",
};

/// The same machine after a reboot with another disk probed first, the
/// serial adapter in another port and other numbering everywhere.
const BOOT_B: Names = Names {
    disk: "sdb",
    ata: "ata2/host1/target1:0:0/1:0:0:0",
    tty_usb: "ttyUSB1",
    usb_port: "1-4",
    devnum: 9,
    card: "card0",
    event: "event9",
    input: "input12",
    hid: "0003:046D:C31C.0005",
    nic: "eth0",
};

const PCI: &str = "pci0000:00";
const WWN: &str = "naa.5002538e40a1b2c3";
const FTDI_SERIAL: &str = "A50285BI";
const KEYBOARD_PHYS: &str = "usb-0000:00:14.0-3/input0";

/// A workstation: a SATA disk with one partition, attached and unattached
/// loop devices, a NIC and a veth, a USB root hub with an FTDI serial
/// adapter and a keyboard, an Intel GPU with a connector and a render
/// node, a real and a phantom 8250 port, a virtual console.
fn workstation(t: &Tree, n: &Names) {
    // SATA disk and its partition.
    let sata = format!("{PCI}/0000:00:17.0/{}", n.ata);
    t.device(&sata, &[("vendor", "ATA     "), ("model", "Samsung SSD 870"), ("wwid", WWN)]);
    let disk = format!("{sata}/block/{}", n.disk);
    t.device(&disk, &[("size", "1000000"), ("ro", "0"), ("removable", "0"), ("queue/rotational", "0"), ("dev", "8:0")]);
    t.link(&format!("devices/{disk}/device"), &format!("devices/{sata}"));
    t.class("block", n.disk, &disk);
    t.node(n.disk);
    let part = format!("{}1", n.disk);
    t.device(&format!("{disk}/{part}"), &[("size", "800000"), ("partition", "1"), ("start", "2048"), ("ro", "0")]);
    t.class("block", &part, &format!("{disk}/{part}"));
    t.node(&part);
    // An unused loop device (skipped) and an attached one.
    t.device("virtual/block/loop0", &[("size", "0"), ("dev", "7:0")]);
    t.class("block", "loop0", "virtual/block/loop0");
    t.device("virtual/block/loop1", &[("size", "2048"), ("dev", "7:1"), ("loop/backing_file", "/var/lib/img.raw")]);
    t.class("block", "loop1", "virtual/block/loop1");
    t.node("loop1");
    // A RAM disk (skipped).
    t.device("virtual/block/ram0", &[("size", "8192"), ("dev", "1:0")]);
    t.class("block", "ram0", "virtual/block/ram0");

    // A NIC with its permanent MAC and a veth with a random one.
    let nic_pci = format!("{PCI}/0000:00:1f.6");
    t.device(&nic_pci, &[("vendor", "0x8086"), ("device", "0x15bc")]);
    t.device("bus/pci/drivers/e1000e", &[]);
    t.link(&format!("devices/{nic_pci}/driver"), "devices/bus/pci/drivers/e1000e");
    let nic = format!("{nic_pci}/net/{}", n.nic);
    let nic_attrs = [
        ("address", "3C:7C:3F:00:11:22"),
        ("addr_assign_type", "0"),
        ("mtu", "1500"),
        ("operstate", "up"),
        ("type", "1"),
        ("speed", "1000"),
    ];
    t.device(&nic, &nic_attrs);
    t.link(&format!("devices/{nic}/device"), &format!("devices/{nic_pci}"));
    t.class("net", n.nic, &nic);
    let veth_attrs = [("address", "4e:99:8e:d4:31:08"), ("addr_assign_type", "1"), ("mtu", "1500"), ("type", "1")];
    t.device("virtual/net/veth1", &veth_attrs);
    t.class("net", "veth1", "virtual/net/veth1");

    // USB: root hub, FTDI adapter (serial number), keyboard (none).
    let hub = format!("{PCI}/0000:00:14.0/usb1");
    t.device(
        &hub,
        &[
            ("idVendor", "1d6b"),
            ("idProduct", "0002"),
            ("serial", "0000:00:14.0"),
            ("busnum", "1"),
            ("devnum", "1"),
            ("product", "xHCI Host Controller"),
        ],
    );
    t.link("bus/usb/devices/usb1", &format!("devices/{hub}"));
    t.node("bus/usb/001/001");
    let ftdi = format!("{hub}/{}", n.usb_port);
    let devnum = n.devnum.to_string();
    t.device(
        &ftdi,
        &[
            ("idVendor", "0403"),
            ("idProduct", "6001"),
            ("manufacturer", "FTDI"),
            ("product", "FT232R USB UART"),
            ("serial", FTDI_SERIAL),
            ("busnum", "1"),
            ("devnum", &devnum),
            ("speed", "12"),
        ],
    );
    t.link(&format!("bus/usb/devices/{}", n.usb_port), &format!("devices/{ftdi}"));
    let interface = format!("{ftdi}/{}:1.0", n.usb_port);
    t.device(&interface, &[("bInterfaceNumber", "00")]);
    t.link(&format!("bus/usb/devices/{}:1.0", n.usb_port), &format!("devices/{interface}"));
    let port = format!("{interface}/{}", n.tty_usb);
    t.device(&port, &[("port_number", "0")]);
    let tty = format!("{port}/tty/{}", n.tty_usb);
    t.device(&tty, &[]);
    t.link(&format!("devices/{tty}/device"), &format!("devices/{port}"));
    t.class("tty", n.tty_usb, &tty);
    t.node(n.tty_usb);
    t.node(&format!("bus/usb/001/{:03}", n.devnum));

    let kbd = format!("{hub}/1-3");
    t.device(
        &kbd,
        &[
            ("idVendor", "046d"),
            ("idProduct", "c31c"),
            ("manufacturer", "Logitech"),
            ("product", "USB Keyboard"),
            ("busnum", "1"),
            ("devnum", "3"),
        ],
    );
    t.link("bus/usb/devices/1-3", &format!("devices/{kbd}"));
    let input = format!("{kbd}/1-3:1.0/{}/input/{}", n.hid, n.input);
    t.device(
        &input,
        &[
            ("name", "Logitech USB Keyboard"),
            ("phys", KEYBOARD_PHYS),
            ("uniq", ""),
            ("id/bustype", "0003"),
            ("id/vendor", "046d"),
            ("id/product", "c31c"),
        ],
    );
    t.class("input", n.input, &input);
    let event = format!("{input}/{}", n.event);
    t.device(&event, &[]);
    t.link(&format!("devices/{event}/device"), &format!("devices/{input}"));
    t.class("input", n.event, &event);
    t.device(&format!("{input}/mouse0"), &[]);
    t.class("input", "mouse0", &format!("{input}/mouse0"));
    t.node(&format!("input/{}", n.event));

    // GPU with a connector and a render node.
    let gpu = format!("{PCI}/0000:00:02.0");
    t.device(&gpu, &[("vendor", "0x8086"), ("device", "0x46a6"), ("boot_vga", "1")]);
    t.device("bus/pci/drivers/i915", &[]);
    t.link(&format!("devices/{gpu}/driver"), "devices/bus/pci/drivers/i915");
    let card = format!("{gpu}/drm/{}", n.card);
    t.device(&card, &[]);
    t.link(&format!("devices/{card}/device"), &format!("devices/{gpu}"));
    t.class("drm", n.card, &card);
    let connector = format!("{card}/{}-HDMI-A-1", n.card);
    t.device(&connector, &[("status", "connected")]);
    t.class("drm", &format!("{}-HDMI-A-1", n.card), &connector);
    t.device(&format!("{gpu}/drm/renderD128"), &[]);
    t.class("drm", "renderD128", &format!("{gpu}/drm/renderD128"));
    t.node(&format!("dri/{}", n.card));
    t.node("dri/renderD128");

    // A real UART, a phantom one, a virtual console.
    for (i, kind, io) in [(0, "4", "0x3F8"), (1, "0", "0x2F8")] {
        let port = format!("platform/serial8250/serial8250:0/serial8250:0.{i}");
        let tty = format!("{port}/tty/ttyS{i}");
        t.device(&port, &[]);
        t.device(&tty, &[("type", kind), ("port", io)]);
        t.link(&format!("devices/{tty}/device"), &format!("devices/{port}"));
        t.class("tty", &format!("ttyS{i}"), &tty);
        t.node(&format!("ttyS{i}"));
    }
    t.device("virtual/tty/tty0", &[]);
    t.class("tty", "tty0", "virtual/tty/tty0");
    t.node("tty0");
}

/// The ids the module docs promise for the workstation's hardware.
fn expected_ids() -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("disk", device_id(DeviceKind::Disk, &format!("wwid:{WWN}"))),
        ("partition", device_id(DeviceKind::Partition, &format!("wwid:{WWN}/part1"))),
        ("loop", device_id(DeviceKind::Disk, "loop:/var/lib/img.raw")),
        ("nic", device_id(DeviceKind::Network, "mac:3c:7c:3f:00:11:22")),
        ("veth", device_id(DeviceKind::Network, "name:veth1")),
        ("hub", device_id(DeviceKind::Usb, "usb:1d6b:0002:0000:00:14.0")),
        ("ftdi", device_id(DeviceKind::Usb, &format!("usb:0403:6001:{FTDI_SERIAL}"))),
        ("keyboard", device_id(DeviceKind::Usb, "usb:046d:c31c@1-3")),
        ("tty_usb", device_id(DeviceKind::Serial, &format!("usb:0403:6001:{FTDI_SERIAL}/1.0/0"))),
        ("ttyS0", device_id(DeviceKind::Serial, "bus:platform/serial8250/serial8250:0/serial8250:0.0/ttyS0")),
        ("event", device_id(DeviceKind::Input, &format!("input:0003:046d:c31c:Logitech USB Keyboard@{KEYBOARD_PHYS}"))),
        ("gpu", device_id(DeviceKind::Gpu, "pci:0000:00:02.0")),
    ])
}

fn by_id(devices: &[DiscoveredDevice]) -> BTreeMap<String, DiscoveredDevice> {
    devices.iter().map(|d| (d.id.clone(), d.clone())).collect()
}

#[tokio::test]
async fn a_fixture_gives_the_right_kinds_paths_and_ids() {
    let t = Tree::new();
    workstation(&t, &BOOT_A);
    let scan = t.inventory().scan().await.unwrap();
    let names: Vec<(DeviceKind, &str)> = scan.iter().map(|d| (d.kind, d.name.as_str())).collect();
    assert_eq!(
        names,
        [
            (DeviceKind::Disk, "loop1"),
            (DeviceKind::Disk, "sda"),
            (DeviceKind::Partition, "sda1"),
            (DeviceKind::Network, "enp0s31f6"),
            (DeviceKind::Network, "veth1"),
            (DeviceKind::Usb, "1-2"),
            (DeviceKind::Usb, "1-3"),
            (DeviceKind::Usb, "usb1"),
            (DeviceKind::Gpu, "card1"),
            (DeviceKind::Serial, "ttyS0"),
            (DeviceKind::Serial, "ttyUSB0"),
            (DeviceKind::Input, "event4"),
        ],
        "no unused loop, RAM disk, connector, render node, phantom UART, console, mouse0 or input7"
    );
    let ids = expected_ids();
    let found = by_id(&scan);
    let get = |key: &str| found.get(&ids[key]).unwrap_or_else(|| panic!("{key} ({}) not in {scan:#?}", ids[key]));

    let disk = get("disk");
    assert_eq!((disk.name.as_str(), disk.path.as_deref()), ("sda", Some("/dev/sda")));
    assert_eq!((disk.vendor.as_deref(), disk.model.as_deref()), (Some("ATA"), Some("Samsung SSD 870")));
    assert_eq!(disk.attributes["size_bytes"], (1_000_000_u64 * 512).to_string());
    assert_eq!(disk.attributes["rotational"], "false");
    assert_eq!(disk.attributes["wwid"], WWN);
    let part = get("partition");
    assert_eq!((part.kind, part.path.as_deref()), (DeviceKind::Partition, Some("/dev/sda1")));
    assert_eq!(part.attributes["parent_id"], disk.id);
    assert_eq!(part.attributes["partition"], "1");
    assert_eq!(part.attributes["size_bytes"], (800_000_u64 * 512).to_string());
    assert_eq!(get("loop").attributes["backing_file"], "/var/lib/img.raw");

    let nic = get("nic");
    assert_eq!(nic.serial.as_deref(), Some("3c:7c:3f:00:11:22"));
    assert_eq!((nic.attributes["type"].as_str(), nic.attributes["driver"].as_str()), ("physical", "e1000e"));
    assert_eq!(nic.attributes["speed_mbps"], "1000");
    assert_eq!(get("veth").attributes["type"], "virtual");

    let ftdi = get("ftdi");
    assert_eq!((ftdi.name.as_str(), ftdi.path.as_deref()), ("1-2", Some("/dev/bus/usb/001/005")));
    assert_eq!((ftdi.vendor.as_deref(), ftdi.model.as_deref()), (Some("FTDI"), Some("FT232R USB UART")));
    assert_eq!(ftdi.attributes["vendor_id"], "0403");
    let tty = get("tty_usb");
    assert_eq!((tty.kind, tty.path.as_deref()), (DeviceKind::Serial, Some("/dev/ttyUSB0")));
    assert_eq!((tty.serial.as_deref(), tty.vendor.as_deref()), (Some(FTDI_SERIAL), Some("FTDI")));
    assert_eq!(tty.attributes["usb_device"], "1-2");
    let uart = get("ttyS0");
    assert_eq!((uart.path.as_deref(), uart.model.as_deref()), (Some("/dev/ttyS0"), Some("16550A")));

    let event = get("event");
    assert_eq!((event.kind, event.path.as_deref()), (DeviceKind::Input, Some("/dev/input/event4")));
    assert_eq!((event.model.as_deref(), event.vendor.as_deref()), (Some("Logitech USB Keyboard"), Some("Logitech")));
    assert_eq!(event.attributes["phys"], KEYBOARD_PHYS);
    assert_eq!(get("keyboard").path, None, "no node under dev/bus/usb/001/003 in the fixture");

    let gpu = get("gpu");
    assert_eq!((gpu.kind, gpu.path.as_deref()), (DeviceKind::Gpu, Some("/dev/dri/card1")));
    assert_eq!((gpu.vendor.as_deref(), gpu.model.as_deref()), (Some("8086"), Some("46a6")));
    assert_eq!(gpu.attributes["driver"], "i915");
    assert_eq!(gpu.attributes["render_node"], "/dev/dri/renderD128");
    assert_eq!(gpu.attributes["pci_address"], "0000:00:02.0");
}

/// Another boot: other kernel names, numbers and probe order, the serial
/// adapter in another port, a second disk and a second adapter found
/// first. Every device of the first boot keeps its id.
#[test]
fn ids_do_not_depend_on_names_numbers_ports_or_order() {
    let a = Tree::new();
    workstation(&a, &BOOT_A);
    let b = Tree::new();
    workstation(&b, &BOOT_B);
    // Probed before the workstation's own disk and adapter.
    let other = format!("{PCI}/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0");
    b.device(&other, &[("wwid", "naa.5000000000000001")]);
    b.device(&format!("{other}/block/sda"), &[("size", "10")]);
    b.link(&format!("devices/{other}/block/sda/device"), &format!("devices/{other}"));
    b.class("block", "sda", &format!("{other}/block/sda"));
    let second = format!("{PCI}/0000:00:14.0/usb1/1-1");
    b.device(&second, &[("idVendor", "0403"), ("idProduct", "6001"), ("serial", "OTHER001")]);
    b.link("bus/usb/devices/1-1", &format!("devices/{second}"));
    let port = format!("{second}/1-1:1.0/ttyUSB0");
    b.device(&port, &[("port_number", "0")]);
    b.device(&format!("{port}/tty/ttyUSB0"), &[]);
    b.link(&format!("devices/{port}/tty/ttyUSB0/device"), &format!("devices/{port}"));
    b.class("tty", "ttyUSB0", &format!("{port}/tty/ttyUSB0"));

    let first = by_id(&a.inventory().scan_blocking().unwrap());
    let second = by_id(&b.inventory().scan_blocking().unwrap());
    assert_eq!(second.len(), first.len() + 3, "plus a disk, an adapter and its port: {second:#?}");
    for (id, d) in &first {
        let again = second.get(id).unwrap_or_else(|| panic!("{} ({id}) lost its id: {second:#?}", d.name));
        assert_eq!(again.kind, d.kind);
    }
    let renamed: BTreeMap<&str, &str> = [("sda", "sdb"), ("sda1", "sdb1"), ("ttyUSB0", "ttyUSB1"), ("card1", "card0")]
        .into_iter()
        .chain([("event4", "event9"), ("enp0s31f6", "eth0"), ("1-2", "1-4")])
        .collect();
    for (id, d) in &first {
        let want = renamed.get(d.name.as_str()).copied().unwrap_or(&d.name);
        assert_eq!(second[id].name, want, "{id}");
    }
    // The partition's parent follows the disk to its new name.
    assert_eq!(second[&expected_ids()["partition"]].attributes["parent"], "sdb");
}

/// Two devices of one kind with the same identity get their sysfs path
/// appended; the ids of both are the same whichever is found first.
#[test]
fn twins_get_distinct_ids_that_do_not_depend_on_order() {
    let build = |ports: [&str; 2]| {
        let t = Tree::new();
        for port in ports {
            let path = format!("{PCI}/0000:00:14.0/usb1/{port}");
            t.device(&path, &[("idVendor", "abcd"), ("idProduct", "0001"), ("serial", "0000000001")]);
            t.link(&format!("bus/usb/devices/{port}"), &format!("devices/{path}"));
        }
        let ids: BTreeMap<String, String> =
            t.inventory().scan_blocking().unwrap().into_iter().map(|d| (d.name, d.id)).collect();
        ids
    };
    let one = build(["1-1", "1-2"]);
    let other = build(["1-2", "1-1"]);
    assert_eq!(one, other);
    assert_ne!(one["1-1"], one["1-2"]);
    assert_eq!(
        one["1-1"],
        device_id(DeviceKind::Usb, &format!("usb:abcd:0001:0000000001@devices/{PCI}/0000:00:14.0/usb1/1-1"))
    );
}

#[test]
fn removed_devices_vanish_from_the_scan() {
    let t = Tree::new();
    workstation(&t, &BOOT_A);
    let inventory = t.inventory();
    let before = by_id(&inventory.scan_blocking().unwrap());
    let ids = expected_ids();

    // Unplug the FTDI adapter the way the kernel does: children first.
    let ftdi = format!("devices/{PCI}/0000:00:14.0/usb1/1-2");
    t.remove("class/tty/ttyUSB0");
    t.remove("bus/usb/devices/1-2:1.0");
    t.remove("bus/usb/devices/1-2");
    t.remove(&ftdi);
    // A class entry whose device folder is already gone (unplugged between
    // the listing and the read): skipped, not an error.
    t.remove(&format!("devices/{PCI}/0000:00:02.0"));
    let after = by_id(&inventory.scan_blocking().unwrap());
    for gone in ["ftdi", "tty_usb", "gpu"] {
        assert!(before.contains_key(&ids[gone]) && !after.contains_key(&ids[gone]), "{gone} still listed");
    }
    assert_eq!(after.len(), before.len() - 3);
    assert!(after.contains_key(&ids["keyboard"]) && after.contains_key(&ids["event"]));
}

#[test]
fn garbled_or_unreadable_attributes_only_lose_their_field() {
    let t = Tree::new();
    workstation(&t, &BOOT_A);
    let disk = format!("devices/{PCI}/0000:00:17.0/{}", BOOT_A.ata);
    // Half-written (empty, or cut inside a number) and not UTF-8.
    t.write(&format!("{disk}/block/sda/size"), "");
    t.write(&format!("{disk}/block/sda/sda1/size"), "80000x");
    std::fs::write(t.sys().join(format!("{disk}/model")), [0xff, 0xfe, b'S']).unwrap();
    // Unreadable: a folder where a file should be (root reads any mode).
    let nic = format!("devices/{PCI}/0000:00:1f.6/net/{}", BOOT_A.nic);
    t.remove(&format!("{nic}/mtu"));
    std::fs::create_dir(t.sys().join(format!("{nic}/mtu"))).unwrap();
    // A dangling link where the driver should be.
    t.remove(&format!("devices/{PCI}/0000:00:02.0/driver"));
    t.link(&format!("devices/{PCI}/0000:00:02.0/driver"), "devices/bus/pci/drivers/gone");
    t.remove("devices/bus/pci/drivers/i915");

    let scan = by_id(&t.inventory().scan_blocking().unwrap());
    let ids = expected_ids();
    assert_eq!(scan.len(), 12, "every device still listed");
    let disk = &scan[&ids["disk"]];
    assert!(!disk.attributes.contains_key("size_bytes") && disk.model.is_none(), "{disk:?}");
    assert_eq!(disk.vendor.as_deref(), Some("ATA"), "other fields are kept");
    assert!(!scan[&ids["partition"]].attributes.contains_key("size_bytes"));
    let nic = &scan[&ids["nic"]];
    assert!(!nic.attributes.contains_key("mtu") && nic.attributes["operstate"] == "up");
    assert_eq!(scan[&ids["gpu"]].attributes["driver"], "gone", "the link's name is all that is read");
}

/// Devices come and go while scans run. The fixture removes a device the
/// way kernfs does for a reader (its `uevent` first, then the rest) and
/// adds it complete (built aside and renamed into place, then the class
/// entry: a path walk that started on an older class entry must not land
/// in a half-made folder). No scan may fail, and a listed device always
/// has its right id: never one made up from a half-read folder.
#[test]
fn devices_vanishing_mid_scan_never_fail_the_scan() {
    let t = Arc::new(Tree::new());
    workstation(&t, &BOOT_A);
    let stable = by_id(&t.inventory().scan_blocking().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (t, stop) = (Arc::clone(&t), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut rounds = 0_u32;
            while !stop.load(Ordering::Relaxed) || rounds < 50 {
                for i in 0..8 {
                    let path = format!("{PCI}/0000:00:1c.0/0000:0{i}:00.0/net/churn{i}");
                    let aside = t.sys().join(format!("staging/churn{i}"));
                    std::fs::create_dir_all(&aside).unwrap();
                    let mac = format!("02:00:00:00:00:0{i}");
                    for (name, value) in [("uevent", ""), ("address", &mac), ("addr_assign_type", "0"), ("mtu", "9000")]
                    {
                        std::fs::write(aside.join(name), value).unwrap();
                    }
                    // Relative to where the folder will be: `…/0000:0i:00.0/net/churnI/device`.
                    symlink("../..", aside.join("device")).unwrap();
                    let target = t.sys().join(format!("devices/{path}"));
                    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                    std::fs::rename(&aside, &target).unwrap();
                    t.class("net", &format!("churn{i}"), &path);
                }
                for i in 0..8 {
                    let path = format!("devices/{PCI}/0000:00:1c.0/0000:0{i}:00.0/net/churn{i}");
                    t.remove(&format!("{path}/uevent"));
                    t.remove(&path);
                    t.remove(&format!("class/net/churn{i}"));
                }
                rounds += 1;
            }
        })
    };
    let churn_ids: BTreeSet<String> =
        (0..8).map(|i| device_id(DeviceKind::Network, &format!("mac:02:00:00:00:00:0{i}"))).collect();
    let inventory = t.inventory();
    let mut seen_churn = 0;
    for _ in 0..300 {
        let scan = inventory.scan_blocking().expect("a scan never fails");
        for d in &scan {
            if d.name.starts_with("churn") {
                assert!(churn_ids.contains(&d.id), "half-read device with a made-up id: {d:?}");
                seen_churn += 1;
            } else {
                assert!(stable.contains_key(&d.id), "{d:?}");
            }
        }
        assert!(stable.keys().all(|id| scan.iter().any(|d| &d.id == id)), "a stable device went missing");
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    eprintln!("churning interfaces seen {seen_churn} times in 300 scans");
}
