//! Inspection results in metal3's shape: `HardwareDetails` (the `status.hardware` of a host
//! and the `spec.hardware` of a `HardwareData` object) and the `HardwareData` resource.
//!
//! The agent sends `agent_proto::HardwareDetails` (serde only, so the static agent never pulls
//! schemars or kube-rs). These types mirror it field for field with a schema, and the
//! conversions both ways are lossless: a test checks that every field survives.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The hardware discovered on the host during its inspection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct HardwareDetails {
    /// System vendor information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_vendor: Option<HardwareSystemVendor>,
    /// System firmware information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Firmware>,
    /// The host's amount of memory in Mebibytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::go_int")]
    pub ram_mebibytes: Option<i64>,
    /// List of network interfaces for the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<Nic>,
    /// List of storage (disk, SSD, etc.) available to the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage: Vec<Storage>,
    /// Details of the CPU(s) in the system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// Name of the host at the inspection time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// System vendor information.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct HardwareSystemVendor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
}

/// System firmware information.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct Firmware {
    /// The BIOS for this firmware
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios: Option<Bios>,
}

/// The BIOS for this firmware
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct Bios {
    /// The release/build date for this BIOS
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// The vendor name for this BIOS
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// The version of the BIOS
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Details of the CPU(s) in the system.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct Cpu {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// ClockSpeed is a clock speed in MHz
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_megahertz: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::go_int")]
    pub count: Option<i64>,
}

/// NIC describes one network interface on the host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct Nic {
    /// The name of the network interface, e.g. "en0"
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The vendor and product IDs of the NIC, e.g. "0x8086 0x1572"
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The device MAC address
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = "[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}"))]
    pub mac: Option<String>,
    /// The IP address of the interface. This will be an IPv4 or IPv6 address if one is
    /// present. If both IPv4 and IPv6 addresses are present in a dual-stack environment, two
    /// nics will be output, one with each IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The speed of the device in Gigabits per second
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::go_int")]
    pub speed_gbps: Option<i64>,
    /// The VLANs available
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlans: Option<Vec<Vlan>>,
    /// The untagged VLAN ID
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4094))]
    pub vlan_id: Option<i32>,
    /// Whether the NIC is PXE Bootable
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pxe: Option<bool>,
    /// The NIC PCI address
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_address: Option<String>,
    /// LLDP data for this interface
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lldp: Option<Lldp>,
}

/// VLAN represents the name and ID of a VLAN.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct Vlan {
    /// VLANID is a 12-bit 802.1Q VLAN identifier
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4094))]
    pub id: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// LLDP data for this interface
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct Lldp {
    /// The switch chassis ID from LLDP
    #[serde(default, rename = "switchID", skip_serializing_if = "Option::is_none")]
    pub switch_id: Option<String>,
    /// The switch port ID from LLDP
    #[serde(default, rename = "portID", skip_serializing_if = "Option::is_none")]
    pub port_id: Option<String>,
    /// The switch system name from LLDP
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch_system_name: Option<String>,
}

/// Device type, one of: HDD, SSD, NVME.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DiskType {
    #[serde(rename = "HDD")]
    Hdd,
    #[serde(rename = "SSD")]
    Ssd,
    #[serde(rename = "NVME")]
    Nvme,
}

/// Storage describes one storage device (disk, SSD, etc.) on the host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct Storage {
    /// A Linux device name of the disk, stable across reboots if one is available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A list of alternate Linux device names of the disk, e.g. "/dev/sda".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alternate_names: Vec<String>,
    /// Whether this disk represents rotational storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
    /// Device type, one of: HDD, SSD, NVME.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub disk_type: Option<DiskType>,
    /// The size of the disk in Bytes
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// The name of the vendor of the device
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Hardware model
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The serial number of the device
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// The WWN of the device
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    /// The WWN Vendor extension of the device
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn_vendor_extension: Option<String>,
    /// The WWN with the extension
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn_with_extension: Option<String>,
    /// The SCSI location of the device
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hctl: Option<String>,
}

/// HardwareDataSpec defines the desired state of HardwareData.
///
/// The controller writes one `HardwareData` per inspected host, with the host's name and
/// namespace and an owner reference to the host.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "metal3.io",
    version = "v1alpha1",
    kind = "HardwareData",
    plural = "hardwaredata",
    singular = "hardwaredata",
    shortname = "hd",
    namespaced,
    doc = "HardwareData is the Schema for the hardwaredata API.",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "Time duration since creation of HardwareData"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null)]
pub struct HardwareDataSpec {
    /// The hardware discovered on the host during its inspection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<HardwareDetails>,
}

// ---- lossless conversions from and to the agent's wire type ----

use agent_proto as wire;

impl From<wire::DiskType> for DiskType {
    fn from(t: wire::DiskType) -> Self {
        match t {
            wire::DiskType::Hdd => DiskType::Hdd,
            wire::DiskType::Ssd => DiskType::Ssd,
            wire::DiskType::Nvme => DiskType::Nvme,
        }
    }
}

// Each conversion destructures the source exhaustively, so a field added to the wire type
// without being carried over here is a compile error, not a silent loss.

fn map_opt<A, B: From<A>>(v: Option<A>) -> Option<B> {
    v.map(B::from)
}

fn map_vec<A, B: From<A>>(v: Vec<A>) -> Vec<B> {
    v.into_iter().map(B::from).collect()
}

impl From<wire::HardwareDetails> for HardwareDetails {
    fn from(v: wire::HardwareDetails) -> Self {
        let wire::HardwareDetails {
            system_vendor,
            firmware,
            ram_mebibytes,
            nics,
            storage,
            cpu,
            hostname,
        } = v;
        Self {
            system_vendor: map_opt(system_vendor),
            firmware: map_opt(firmware),
            ram_mebibytes,
            nics: map_vec(nics),
            storage: map_vec(storage),
            cpu: map_opt(cpu),
            hostname,
        }
    }
}

impl From<wire::HardwareSystemVendor> for HardwareSystemVendor {
    fn from(v: wire::HardwareSystemVendor) -> Self {
        let wire::HardwareSystemVendor {
            manufacturer,
            product_name,
            serial_number,
        } = v;
        Self {
            manufacturer,
            product_name,
            serial_number,
        }
    }
}

impl From<wire::Firmware> for Firmware {
    fn from(v: wire::Firmware) -> Self {
        let wire::Firmware { bios } = v;
        Self {
            bios: map_opt(bios),
        }
    }
}

impl From<wire::Bios> for Bios {
    fn from(v: wire::Bios) -> Self {
        let wire::Bios {
            date,
            vendor,
            version,
        } = v;
        Self {
            date,
            vendor,
            version,
        }
    }
}

impl From<wire::Cpu> for Cpu {
    fn from(v: wire::Cpu) -> Self {
        let wire::Cpu {
            arch,
            model,
            clock_megahertz,
            flags,
            count,
        } = v;
        Self {
            arch,
            model,
            clock_megahertz,
            flags,
            count,
        }
    }
}

impl From<wire::Nic> for Nic {
    fn from(v: wire::Nic) -> Self {
        let wire::Nic {
            name,
            model,
            mac,
            ip,
            speed_gbps,
            vlans,
            vlan_id,
            pxe,
            pci_address,
            lldp,
        } = v;
        Self {
            name,
            model,
            mac,
            ip,
            speed_gbps,
            vlans: vlans.map(map_vec),
            vlan_id,
            pxe,
            pci_address,
            lldp: map_opt(lldp),
        }
    }
}

impl From<wire::Vlan> for Vlan {
    fn from(v: wire::Vlan) -> Self {
        let wire::Vlan { id, name } = v;
        Self { id, name }
    }
}

impl From<wire::Lldp> for Lldp {
    fn from(v: wire::Lldp) -> Self {
        let wire::Lldp {
            switch_id,
            port_id,
            switch_system_name,
        } = v;
        Self {
            switch_id,
            port_id,
            switch_system_name,
        }
    }
}

impl From<wire::Storage> for Storage {
    fn from(v: wire::Storage) -> Self {
        let wire::Storage {
            name,
            alternate_names,
            rotational,
            disk_type,
            size_bytes,
            vendor,
            model,
            serial_number,
            wwn,
            wwn_vendor_extension,
            wwn_with_extension,
            hctl,
        } = v;
        Self {
            name,
            alternate_names,
            rotational,
            disk_type: map_opt(disk_type),
            size_bytes,
            vendor,
            model,
            serial_number,
            wwn,
            wwn_vendor_extension,
            wwn_with_extension,
            hctl,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wire value with every field set, including both `Some(false)` and non-empty lists, so
    /// a dropped or defaulted field shows up as a difference.
    fn full_wire() -> wire::HardwareDetails {
        wire::HardwareDetails {
            system_vendor: Some(wire::HardwareSystemVendor {
                manufacturer: Some("QEMU".into()),
                product_name: Some("Standard PC (Q35 + ICH9, 2009)".into()),
                serial_number: Some("SN-1".into()),
            }),
            firmware: Some(wire::Firmware {
                bios: Some(wire::Bios {
                    date: Some("04/01/2014".into()),
                    vendor: Some("SeaBIOS".into()),
                    version: Some("1.16.3".into()),
                }),
            }),
            ram_mebibytes: Some(4096),
            nics: vec![wire::Nic {
                name: Some("eth0".into()),
                model: Some("0x1af4 0x0001".into()),
                mac: Some("52:54:00:12:34:56".into()),
                ip: Some("192.0.2.10".into()),
                speed_gbps: Some(10),
                vlans: Some(vec![wire::Vlan {
                    id: Some(100),
                    name: Some("eth0.100".into()),
                }]),
                vlan_id: Some(0),
                pxe: Some(false),
                pci_address: Some("0000:00:03.0".into()),
                lldp: Some(wire::Lldp {
                    switch_id: Some("aa:bb:cc:dd:ee:ff".into()),
                    port_id: Some("Ethernet1/1".into()),
                    switch_system_name: Some("tor-1".into()),
                }),
            }],
            storage: vec![wire::Storage {
                name: Some("/dev/disk/by-path/pci-0000:00:05.0".into()),
                alternate_names: vec!["/dev/vda".into()],
                rotational: Some(false),
                disk_type: Some(wire::DiskType::Nvme),
                size_bytes: Some(10_737_418_240),
                vendor: Some("0x1af4".into()),
                model: Some("QEMU NVMe Ctrl".into()),
                serial_number: Some("deadbeef".into()),
                wwn: Some("eui.1".into()),
                wwn_vendor_extension: Some("0x1".into()),
                wwn_with_extension: Some("eui.10x1".into()),
                hctl: Some("0:0:0:0".into()),
            }],
            cpu: Some(wire::Cpu {
                arch: Some("x86_64".into()),
                model: Some("QEMU Virtual CPU".into()),
                clock_megahertz: Some(2399.998),
                flags: vec!["fpu".into(), "sse2".into()],
                count: Some(2),
            }),
            hostname: Some("host-0".into()),
        }
    }

    #[test]
    fn from_wire_is_lossless() {
        let wire = full_wire();
        let ours = HardwareDetails::from(wire.clone());
        let a = serde_json::to_value(&wire).unwrap();
        let b = serde_json::to_value(&ours).unwrap();
        assert_eq!(a, b);
        // And the JSON the agent sends parses into our type unchanged.
        let parsed: HardwareDetails = serde_json::from_value(a).unwrap();
        assert_eq!(parsed, ours);
    }

    #[test]
    fn from_wire_keeps_every_disk_type() {
        for (w, o) in [
            (wire::DiskType::Hdd, DiskType::Hdd),
            (wire::DiskType::Ssd, DiskType::Ssd),
            (wire::DiskType::Nvme, DiskType::Nvme),
        ] {
            assert_eq!(DiskType::from(w), o);
        }
    }
}

/// The `HardwareData` object for `host`'s inspection results: same name and namespace as the
/// host, owned by it (a controller owner reference, so deleting the host deletes it).
///
/// Returns `None` when the host has no name or uid yet (it was never stored by the API server).
pub fn hardware_data_for(
    host: &crate::bmh::BareMetalHost,
    hardware: HardwareDetails,
) -> Option<HardwareData> {
    use kube::Resource;
    let owner = host.controller_owner_ref(&())?;
    let mut hd = HardwareData::new(
        host.metadata.name.as_deref()?,
        HardwareDataSpec {
            hardware: Some(hardware),
        },
    );
    hd.metadata.namespace = host.metadata.namespace.clone();
    hd.metadata.owner_references = Some(vec![owner]);
    Some(hd)
}

#[cfg(test)]
mod owner_tests {
    use super::*;
    use crate::bmh::{BareMetalHost, BareMetalHostSpec};

    #[test]
    fn hardware_data_is_named_and_owned_like_the_host() {
        let mut host = BareMetalHost::new("worker-0", BareMetalHostSpec::default());
        assert!(
            hardware_data_for(&host, HardwareDetails::default()).is_none(),
            "no uid yet"
        );
        host.metadata.namespace = Some("metal3".into());
        host.metadata.uid = Some("6f1c-uid".into());
        let details = HardwareDetails {
            hostname: Some("worker-0".into()),
            ..Default::default()
        };
        let hd = hardware_data_for(&host, details.clone()).unwrap();
        assert_eq!(hd.metadata.name.as_deref(), Some("worker-0"));
        assert_eq!(hd.metadata.namespace.as_deref(), Some("metal3"));
        assert_eq!(hd.spec.hardware, Some(details));
        let owners = hd.metadata.owner_references.unwrap();
        assert_eq!(owners.len(), 1);
        let o = &owners[0];
        assert_eq!(
            (
                o.api_version.as_str(),
                o.kind.as_str(),
                o.name.as_str(),
                o.uid.as_str()
            ),
            (
                "metal3.io/v1alpha1",
                "BareMetalHost",
                "worker-0",
                "6f1c-uid"
            )
        );
        assert_eq!(o.controller, Some(true));
    }
}
