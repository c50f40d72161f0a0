//! One reader per device class. Each returns what it found with the
//! identity the module docs describe; [`super::assign_ids`] turns those
//! into ids.

use std::collections::{BTreeMap, HashMap};

use homeserver_domain::DiscoveredDevice;

use super::sysfs::{Node, base_name, hex_id, parent};
use super::{Found, Scan};

/// sysfs sizes are in 512-byte sectors whatever the device's block size.
const SECTOR_BYTES: u64 = 512;

type Attributes = BTreeMap<String, String>;

fn put(attributes: &mut Attributes, key: &str, value: Option<impl Into<String>>) {
    if let Some(value) = value {
        attributes.insert(key.to_owned(), value.into());
    }
}

/// A sysfs `0`/`1` flag as `false`/`true`.
fn flag(text: String) -> Option<&'static str> {
    match text.as_str() {
        "0" => Some("false"),
        "1" => Some("true"),
        _ => None,
    }
}

fn found(node: &Node, device: DiscoveredDevice, identity: String) -> Found {
    Found { device, identity, sysfs_path: node.rel.clone() }
}

// ---------------------------------------------------------------- block

/// A partition waiting for its disk's identity.
#[derive(Debug)]
pub(crate) struct PendingPartition {
    found: Found,
    /// Kernel name of the disk, when the entry's sysfs path shows it.
    disk: Option<String>,
    number: Option<u64>,
}

/// Whole block devices (identities final) and partitions (pending).
pub(crate) fn block(scan: &Scan<'_>) -> (Vec<Found>, Vec<PendingPartition>) {
    let (mut disks, mut partitions) = (Vec::new(), Vec::new());
    for entry in scan.entries("class/block") {
        let Some(node) = Node::open(scan.sys_root, "class/block", &entry) else { continue };
        if node.attr("hidden").as_deref() == Some("1") {
            continue;
        }
        let dev = node.attr("dev");
        // RAM disks (brd, major 1): lsblk leaves them out as well.
        if dev.as_deref().and_then(|d| d.split(':').next()) == Some("1") {
            continue;
        }
        let mut attributes = Attributes::new();
        put(&mut attributes, "size_bytes", node.attr_u64("size").map(|s| s.saturating_mul(SECTOR_BYTES).to_string()));
        put(&mut attributes, "read_only", node.attr("ro").and_then(flag));
        put(&mut attributes, "dev", dev);
        if node.has("partition") {
            let pending = read_partition(scan, &node, attributes);
            if node.alive() {
                partitions.push(pending);
            }
            continue;
        }
        if let Some(disk) = read_disk(scan, &node, attributes)
            && node.alive()
        {
            disks.push(disk);
        }
    }
    (disks, partitions)
}

/// What kind of block device a kernel name is.
fn block_type(name: &str) -> &'static str {
    const TYPES: [(&str, &str); 6] =
        [("loop", "loop"), ("dm-", "dm"), ("md", "md"), ("zram", "zram"), ("sr", "rom"), ("nbd", "nbd")];
    TYPES.iter().find(|(prefix, _)| name.starts_with(prefix)).map_or("disk", |(_, t)| t)
}

fn read_disk(scan: &Scan<'_>, node: &Node, mut attributes: Attributes) -> Option<Found> {
    let name = node.name.clone();
    let kind = block_type(&name);
    let backing_file = if kind == "loop" {
        // Set up but not attached: not a device anyone can use.
        Some(node.attr("loop/backing_file")?)
    } else {
        None
    };
    let serial = node
        .attr("serial")
        .or_else(|| node.attr("device/serial"))
        .or_else(|| node.attr_bytes("device/vpd_pg80").and_then(|page| vpd_serial(&page)));
    let wwid = node.attr("wwid").or_else(|| node.attr("device/wwid"));
    let dm_uuid = if kind == "dm" { node.attr("dm/uuid") } else { None };
    let md_uuid = if kind == "md" { node.attr("md/uuid") } else { None };
    let cid = node.attr("device/cid");
    let device = node.link("device");
    let bus_path = device.as_deref().map(Node::bus_path_of);

    let identity = if let Some(w) = &wwid {
        format!("wwid:{w}")
    } else if let Some(u) = &dm_uuid {
        format!("dm:{u}")
    } else if let Some(u) = &md_uuid {
        format!("md:{u}")
    } else if let Some(c) = &cid {
        format!("mmc:{c}")
    } else if let Some(s) = &serial {
        format!("serial:{s}")
    } else if let Some(f) = &backing_file {
        format!("loop:{f}")
    } else if let Some(b) = bus_path {
        format!("bus:{b}")
    } else {
        format!("name:{name}")
    };

    put(&mut attributes, "block_type", Some(kind));
    put(&mut attributes, "removable", node.attr("removable").and_then(flag));
    put(&mut attributes, "rotational", node.attr("queue/rotational").and_then(flag));
    put(&mut attributes, "wwid", wwid);
    put(&mut attributes, "bus_path", bus_path);
    put(&mut attributes, "backing_file", backing_file);
    if kind == "dm" {
        put(&mut attributes, "dm_name", node.attr("dm/name"));
    }
    let device = DiscoveredDevice {
        name: name.clone(),
        // SCSI says `ATA`, virtio a PCI vendor id (`0x1af4`, printed as lspci does).
        vendor: node.attr("device/vendor").map(|v| if v.starts_with("0x") { hex_id(&v).unwrap_or(v) } else { v }),
        model: node.attr("device/model"),
        serial,
        path: scan.node(&name),
        attributes,
        ..Default::default()
    };
    Some(found(node, device, identity))
}

/// The unit serial number in a SCSI VPD page 0x80: a 4-byte header whose
/// last byte is the length, then ASCII.
fn vpd_serial(page: &[u8]) -> Option<String> {
    let len = usize::from(*page.get(3)?);
    let bytes = page.get(4..4 + len).or_else(|| page.get(4..))?;
    let text = std::str::from_utf8(bytes).ok()?.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!text.is_empty() && text.chars().all(|c| c.is_ascii_graphic() || c == ' ')).then(|| text.to_owned())
}

fn read_partition(scan: &Scan<'_>, node: &Node, mut attributes: Attributes) -> PendingPartition {
    let number = node.attr_u64("partition");
    // A partition's folder sits inside its disk's: `devices/…/block/sda/sda1`.
    let disk = node.rel.starts_with("devices/").then(|| parent(&node.rel).map(base_name)).flatten().map(str::to_owned);
    put(&mut attributes, "partition", number.map(|n| n.to_string()));
    put(&mut attributes, "start_sector", node.attr_u64("start").map(|n| n.to_string()));
    put(&mut attributes, "removable", node.attr("../removable").and_then(flag));
    put(&mut attributes, "rotational", node.attr("../queue/rotational").and_then(flag));
    put(&mut attributes, "parent", disk.clone());
    let device =
        DiscoveredDevice { name: node.name.clone(), path: scan.node(&node.name), attributes, ..Default::default() };
    PendingPartition { found: found(node, device, String::new()), disk, number }
}

/// Partitions with their identities: the disk's plus the number. Those of
/// a disk that is not listed (vanished mid-scan) are dropped with it.
pub(crate) fn partitions(pending: Vec<PendingPartition>, disks: &[Found]) -> Vec<Found> {
    let by_name: HashMap<&str, &Found> = disks.iter().map(|d| (d.device.name.as_str(), d)).collect();
    let mut out = Vec::new();
    for PendingPartition { mut found, disk, number } in pending {
        let number = number.map_or_else(|| format!("?{}", found.device.name), |n| n.to_string());
        match disk.as_deref().map(|d| by_name.get(d)) {
            Some(Some(disk)) => {
                found.identity = format!("{}/part{number}", disk.identity);
                found.device.vendor.clone_from(&disk.device.vendor);
                found.device.model.clone_from(&disk.device.model);
                found.device.attributes.insert("parent_id".to_owned(), disk.device.id.clone());
            }
            Some(None) => continue,
            None => found.identity = format!("name:{}", found.device.name),
        }
        out.push(found);
    }
    out
}

// -------------------------------------------------------------- network

/// `addr_assign_type` names (`include/uapi/linux/netdevice.h`).
fn addr_assign(code: &str) -> Option<&'static str> {
    Some(match code {
        "0" => "permanent",
        "1" => "random",
        "2" => "stolen",
        "3" => "set",
        _ => return None,
    })
}

/// The commonest ARPHRD link types (`include/uapi/linux/if_arp.h`);
/// others keep their number.
fn link_type(code: &str) -> String {
    match code {
        "1" => "ether",
        "32" => "infiniband",
        "512" => "ppp",
        "768" => "ipip",
        "769" => "tunnel6",
        "772" => "loopback",
        "776" => "sit",
        "778" => "gre",
        "801" => "ieee80211",
        "803" => "ieee80211_radiotap",
        "823" => "ip6gre",
        "65534" => "none",
        other => other,
    }
    .to_owned()
}

/// Network interfaces.
pub(crate) fn network(scan: &Scan<'_>) -> Vec<Found> {
    let mut out = Vec::new();
    for entry in scan.entries("class/net") {
        let Some(node) = Node::open(scan.sys_root, "class/net", &entry) else { continue };
        let name = node.name.clone();
        // Virtual interfaces have no parent device: spare the lookup.
        let device = if node.rel.starts_with("devices/virtual/") { None } else { node.link("device") };
        let address = node.attr("address").map(|a| a.to_ascii_lowercase());
        let mac = address.filter(|a| a.bytes().any(|b| b != b'0' && b != b':'));
        let assign = node.attr("addr_assign_type");
        let identity = match (&device, &mac) {
            (Some(_), Some(mac)) if assign.as_deref() == Some("0") => format!("mac:{mac}"),
            (Some(device), _) => {
                let port = node.attr_u64("dev_port").unwrap_or(0);
                format!("bus:{}#{port}", Node::bus_path_of(device))
            }
            (None, _) => format!("name:{name}"),
        };

        let mut attributes = Attributes::new();
        put(&mut attributes, "type", Some(if device.is_some() { "physical" } else { "virtual" }));
        put(&mut attributes, "mtu", node.attr_u64("mtu").map(|n| n.to_string()));
        put(&mut attributes, "operstate", node.attr("operstate"));
        put(&mut attributes, "link_type", node.attr("type").map(|t| link_type(&t)));
        put(&mut attributes, "addr_assign_type", assign.as_deref().and_then(addr_assign));
        // `speed` is -1 or EINVAL without a link: no figure then.
        put(&mut attributes, "speed_mbps", node.attr_u64("speed").map(|n| n.to_string()));
        let (mut vendor, mut model) = (None, None);
        if let Some(device) = &device {
            put(&mut attributes, "bus_path", Some(Node::bus_path_of(device)));
            put(&mut attributes, "driver", node.link_name("device/driver"));
            vendor = node.attr("device/vendor").and_then(|v| hex_id(&v));
            model = node.attr("device/device").and_then(|v| hex_id(&v));
        }
        let device =
            DiscoveredDevice { name, vendor, model, serial: mac, path: None, attributes, ..Default::default() };
        if node.alive() {
            out.push(found(&node, device, identity));
        }
    }
    out
}

// ------------------------------------------------------------------ usb

/// A USB device that serial ports and input devices below it refer to.
#[derive(Debug, Clone)]
pub(crate) struct UsbAnchor {
    name: String,
    identity: String,
    vendor: Option<String>,
    model: Option<String>,
    serial: Option<String>,
}

impl UsbAnchor {
    /// The anchor of a USB device found by [`usb`], keyed by its sysfs path.
    pub(crate) fn of(found: &Found) -> (String, Self) {
        let d = &found.device;
        let anchor = Self {
            name: d.name.clone(),
            identity: found.identity.clone(),
            vendor: d.vendor.clone(),
            model: d.model.clone(),
            serial: d.serial.clone(),
        };
        (found.sysfs_path.clone(), anchor)
    }
}

/// The USB device `rel` is (or sits below), with the rest of the path
/// below it (`1-1.2:1.0/ttyUSB0`).
fn usb_ancestor<'a, 'r>(usb: &'a BTreeMap<String, UsbAnchor>, rel: &'r str) -> Option<(&'a UsbAnchor, &'r str)> {
    let mut at = rel;
    loop {
        if let Some(anchor) = usb.get(at) {
            let rest = rel[at.len()..].trim_start_matches('/');
            return Some((anchor, rest));
        }
        at = parent(at)?;
    }
}

/// USB devices (hubs included; interfaces are not devices).
pub(crate) fn usb(scan: &Scan<'_>) -> Vec<Found> {
    let mut out = Vec::new();
    for entry in scan.entries("bus/usb/devices") {
        // `1-1.2:1.0` is an interface of `1-1.2`.
        if entry.to_str().is_none_or(|n| n.contains(':')) {
            continue;
        }
        let Some(node) = Node::open(scan.sys_root, "bus/usb/devices", &entry) else { continue };
        let Some(vendor_id) = node.attr("idVendor").and_then(|v| hex_id(&v)) else { continue };
        let product_id = node.attr("idProduct").and_then(|v| hex_id(&v));
        let product_or_zero = product_id.as_deref().unwrap_or("0000");
        let serial = node.attr("serial");
        let name = node.name.clone();
        let identity = match &serial {
            Some(serial) => format!("usb:{vendor_id}:{product_or_zero}:{serial}"),
            None => format!("usb:{vendor_id}:{product_or_zero}@{name}"),
        };
        let (busnum, devnum) = (node.attr_u64("busnum"), node.attr_u64("devnum"));
        let path = busnum.zip(devnum).and_then(|(b, d)| scan.node(&format!("bus/usb/{b:03}/{d:03}")));

        let mut attributes = Attributes::new();
        put(&mut attributes, "bus_path", Some(name.clone()));
        put(&mut attributes, "vendor_id", Some(vendor_id.clone()));
        put(&mut attributes, "product_id", product_id.clone());
        put(&mut attributes, "busnum", busnum.map(|n| n.to_string()));
        put(&mut attributes, "devnum", devnum.map(|n| n.to_string()));
        put(&mut attributes, "speed_mbps", node.attr("speed"));
        put(&mut attributes, "device_class", node.attr("bDeviceClass"));
        put(&mut attributes, "driver", node.link_name("driver"));
        let device = DiscoveredDevice {
            vendor: node.attr("manufacturer").or(Some(vendor_id)),
            model: node.attr("product").or(product_id),
            name,
            serial,
            path,
            attributes,
            ..Default::default()
        };
        if node.alive() {
            out.push(found(&node, device, identity));
        }
    }
    out
}

// --------------------------------------------------------------- serial

/// UART chips by `type` (`PORT_*` in `include/uapi/linux/serial_core.h`).
fn uart_model(code: &str) -> Option<&'static str> {
    Some(match code {
        "1" => "8250",
        "2" => "16450",
        "3" => "16550",
        "4" => "16550A",
        "5" => "Cirrus",
        "6" => "16650",
        "7" => "16650V2",
        "8" => "16750",
        "9" => "Startech",
        "10" => "16C950/954",
        "11" => "16654",
        "12" => "16850",
        _ => return None,
    })
}

/// Serial ports with hardware behind them.
pub(crate) fn serial(scan: &Scan<'_>, usb: &BTreeMap<String, UsbAnchor>) -> Vec<Found> {
    let mut out = Vec::new();
    for entry in scan.entries("class/tty") {
        let Some(node) = Node::open(scan.sys_root, "class/tty", &entry) else { continue };
        // Virtual consoles, pseudo-terminals: no hardware.
        if node.rel.starts_with("devices/virtual/") {
            continue;
        }
        let Some(device) = node.link("device") else { continue };
        let uart = node.attr("type");
        // PORT_UNKNOWN: the driver reserved the port, no chip answered.
        if uart.as_deref() == Some("0") {
            continue;
        }
        let name = node.name.clone();
        let mut attributes = Attributes::new();
        put(&mut attributes, "bus_path", Some(Node::bus_path_of(&device)));
        put(&mut attributes, "driver", node.link_name("device/driver"));
        let mut d = DiscoveredDevice { path: scan.node(&name), ..Default::default() };
        let identity = match usb_ancestor(usb, &device) {
            Some((anchor, rest)) => {
                let interface = rest.split('/').next().and_then(|c| c.rsplit_once(':')).map_or("-", |(_, i)| i);
                let port = node.attr_u64("device/port_number").unwrap_or(0);
                put(&mut attributes, "usb_device", Some(anchor.name.clone()));
                put(&mut attributes, "usb_interface", Some(interface));
                d.vendor.clone_from(&anchor.vendor);
                d.model.clone_from(&anchor.model);
                d.serial.clone_from(&anchor.serial);
                format!("{}/{interface}/{port}", anchor.identity)
            }
            None => {
                d.model = uart.as_deref().and_then(uart_model).map(str::to_owned);
                format!("bus:{}/{name}", Node::bus_path_of(&device))
            }
        };
        put(&mut attributes, "uart_type", uart);
        put(&mut attributes, "io_port", node.attr("port").filter(|p| p != "0x0"));
        d.name = name;
        d.attributes = attributes;
        if node.alive() {
            out.push(found(&node, d, identity));
        }
    }
    out
}

// ---------------------------------------------------------------- input

/// Input event devices.
pub(crate) fn input(scan: &Scan<'_>, usb: &BTreeMap<String, UsbAnchor>) -> Vec<Found> {
    let mut out = Vec::new();
    for entry in scan.entries("class/input") {
        let is_event = entry
            .to_str()
            .and_then(|n| n.strip_prefix("event"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !is_event {
            continue;
        }
        let Some(node) = Node::open(scan.sys_root, "class/input", &entry) else { continue };
        let name = node.name.clone();
        let product_name = node.attr("device/name");
        let (phys, uniq) = (node.attr("device/phys"), node.attr("device/uniq"));
        let id = |field: &str| node.attr(&format!("device/id/{field}")).and_then(|v| hex_id(&v));
        let (bustype, vendor_id, product_id) = (id("bustype"), id("vendor"), id("product"));
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
        let mut identity =
            format!("input:{}:{}:{}:{}", dash(&bustype), dash(&vendor_id), dash(&product_id), dash(&product_name));
        if let Some(uniq) = &uniq {
            identity.push_str(&format!(":{uniq}"));
        } else if let Some(phys) = &phys {
            identity.push_str(&format!("@{phys}"));
        }

        // `…/<hardware>/input/input7/event3`: the hardware is two folders up
        // from the input device.
        let hardware = node.link("device").and_then(|input| parent(&input).and_then(parent).map(str::to_owned));
        let anchor = hardware.as_deref().and_then(|h| usb_ancestor(usb, h)).map(|(a, _)| a);
        let mut attributes = Attributes::new();
        put(&mut attributes, "bustype", bustype);
        put(&mut attributes, "vendor_id", vendor_id.clone());
        put(&mut attributes, "product_id", product_id);
        put(&mut attributes, "phys", phys);
        put(&mut attributes, "uniq", uniq.clone());
        put(&mut attributes, "bus_path", hardware.as_deref().map(Node::bus_path_of));
        put(&mut attributes, "usb_device", anchor.map(|a| a.name.clone()));
        let vendor_id = vendor_id.filter(|v| v != "0000");
        let device = DiscoveredDevice {
            path: scan.node(&format!("input/{name}")),
            name,
            vendor: anchor.and_then(|a| a.vendor.clone()).or(vendor_id),
            model: product_name,
            serial: uniq,
            attributes,
            ..Default::default()
        };
        if node.alive() {
            out.push(found(&node, device, identity));
        }
    }
    out
}

// ------------------------------------------------------------------ gpu

/// `dddd:bb:dd.f`, the domain possibly longer (VMD domains).
fn is_pci_address(text: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let mut parts = text.split(':');
    let (Some(domain), Some(bus), Some(slot), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Some((device, function)) = slot.split_once('.') else { return false };
    hex(domain) && hex(bus) && hex(device) && hex(function)
}

/// DRM cards (`card<N>`; connectors `card0-HDMI-A-1` and render nodes are
/// views of a card).
pub(crate) fn gpu(scan: &Scan<'_>) -> Vec<Found> {
    let mut out = Vec::new();
    for entry in scan.entries("class/drm") {
        let is_card = entry
            .to_str()
            .and_then(|n| n.strip_prefix("card"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !is_card {
            continue;
        }
        let Some(node) = Node::open(scan.sys_root, "class/drm", &entry) else { continue };
        let name = node.name.clone();
        let device = node.link("device");
        let pci = device.as_deref().map(base_name).filter(|b| is_pci_address(b)).map(str::to_owned);
        let identity = match (&pci, &device) {
            (Some(pci), _) => format!("pci:{pci}"),
            (None, Some(device)) => format!("bus:{}", Node::bus_path_of(device)),
            (None, None) => format!("name:{name}"),
        };
        let id = |field: &str| node.attr(&format!("device/{field}")).and_then(|v| hex_id(&v));
        let (vendor_id, device_id) = (id("vendor"), id("device"));
        let mut render: Vec<String> =
            node.list("device/drm").into_iter().filter(|n| n.starts_with("renderD")).collect();
        render.sort();

        let mut attributes = Attributes::new();
        put(&mut attributes, "pci_address", pci);
        put(&mut attributes, "vendor_id", vendor_id.clone());
        put(&mut attributes, "device_id", device_id.clone());
        put(&mut attributes, "subsystem_vendor_id", id("subsystem_vendor"));
        put(&mut attributes, "subsystem_device_id", id("subsystem_device"));
        put(&mut attributes, "driver", node.link_name("device/driver"));
        put(&mut attributes, "boot_vga", node.attr("device/boot_vga").and_then(flag));
        put(&mut attributes, "bus_path", device.as_deref().map(Node::bus_path_of));
        put(&mut attributes, "render_node", render.first().and_then(|r| scan.node(&format!("dri/{r}"))));
        let device = DiscoveredDevice {
            path: scan.node(&format!("dri/{name}")),
            name,
            vendor: vendor_id,
            model: device_id,
            attributes,
            ..Default::default()
        };
        if node.alive() {
            out.push(found(&node, device, identity));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_parsers() {
        let mut page = vec![0, 0x80, 0, 8];
        page.extend_from_slice(b"  S21P9X\0");
        assert_eq!(vpd_serial(&page).as_deref(), Some("S21P9X"));
        assert_eq!(vpd_serial(&[0, 0x80, 0, 0]), None);
        assert_eq!(vpd_serial(&[0, 0x80]), None);
        assert!(is_pci_address("0000:00:02.0") && is_pci_address("10000:e1:00.1"));
        assert!(!is_pci_address("virtio1") && !is_pci_address("00:00:0.0:1") && !is_pci_address("0000:00:02"));
        assert_eq!(block_type("loop3"), "loop");
        assert_eq!(block_type("nvme0n1"), "disk");
        assert_eq!(block_type("sr0"), "rom");
        assert_eq!(link_type("772"), "loopback");
        assert_eq!(link_type("9999"), "9999");
        assert_eq!(uart_model("4"), Some("16550A"));
    }
}
