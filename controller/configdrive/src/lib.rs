//! Config drive (config-2, as cloud-init reads it) from a host's userData, networkData and
//! metaData.
//!
//! Why this exists: metal3 hands a provisioned host its identity and first-boot script
//! through an OpenStack config drive. baremetal-operator (`getConfigDrive` in
//! `pkg/provisioner/ironic`) turns the BareMetalHost's Secrets into three documents, Ironic
//! (`build_configdrive`, openstacksdk's `configdrive.populate_directory`) writes them into a
//! filesystem labelled `config-2`, and IPA copies that filesystem into a new partition at
//! the end of the disk. Ferrox does the same split: [`build`] here, in the controller, and
//! `agent_image::configdrive::write_config_drive` in the agent.
//!
//! What goes into the drive, as baremetal-operator and Ironic produce it:
//!
//! * `openstack/{2012-08-10,latest}/meta_data.json`: `uuid` (the BareMetalHost's
//!   `metadata.uid`), `metal3-namespace`, `metal3-name`, `local-hostname`, `local_hostname`,
//!   `name`; the keys of the metaData Secret (YAML) are merged over these defaults, so a
//!   Secret can override any of them (baremetal-operator unmarshals the Secret into the
//!   defaults map).
//! * `openstack/{…}/user_data`: the userData Secret's bytes, unchanged (cloud-config,
//!   a script, ignition…), only when given.
//! * `openstack/{…}/network_data.json`: the networkData Secret (YAML, parsed into an
//!   object and written as JSON), only when given.
//!
//! Ironic writes both `2012-08-10` and `latest`; cloud-init picks the newest version it
//! knows (`2012-08-10`, as `latest` is not in its list) and falls back to `latest`, so
//! both directories carry the same files.
//!
//! Ironic packs an ISO 9660 image; Ferrox writes VFAT, which cloud-init reads the same
//! way (it finds the drive by its label, `config-2`, on `vfat` or `iso9660`) and which IPA
//! itself falls back to when a device cannot do 2 KiB ISO blocks. The whole image is built
//! in memory (it is at most a few MiB) and is reproducible: no timestamps (FAT's epoch).
//!
//! Sizes are bounded ([`MAX_USER_DATA`], [`MAX_NETWORK_DATA`], [`MAX_META_DATA`]):
//! a Kubernetes Secret holds at most 1 MiB, so these limits reject nothing a metal3
//! manifest can carry, and keep the drive far below IPA's 64 MiB partition.

use std::io::{Cursor, Read, Write};

use base64::Engine as _;
use fatfs::{FileSystem, FormatVolumeOptions, FsOptions};
use serde_json::{Map, Value};

/// The filesystem label cloud-init looks for (`LABEL=config-2`).
pub const LABEL: &str = "config-2";
/// Largest userData accepted (bytes): a Kubernetes Secret's own limit.
pub const MAX_USER_DATA: usize = 1 << 20;
/// Largest `network_data.json` accepted (serialized bytes).
pub const MAX_NETWORK_DATA: usize = 1 << 20;
/// Largest `meta_data.json` accepted (serialized bytes).
pub const MAX_META_DATA: usize = 1 << 20;
/// Largest Secret text [`parse_secret_map`] reads.
pub const MAX_SECRET: usize = 1 << 20;
/// Largest filesystem image: IPA's config drive partition (`MAX_CONFIG_DRIVE_SIZE_MB`).
pub const MAX_IMAGE: usize = 64 << 20;
/// The metadata versions written, as Ironic does (openstacksdk's default).
pub const VERSIONS: [&str; 2] = ["2012-08-10", "latest"];

/// Why a config drive could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigDriveError {
    #[error("{what} is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("{0} is empty: cloud-init needs it")]
    Missing(&'static str),
    #[error("{what} must be a mapping (an object), not {found}")]
    NotAMap { what: &'static str, found: String },
    #[error("{what} is not valid YAML")]
    Yaml {
        what: &'static str,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("serializing {what}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("building the config drive filesystem")]
    Fat(#[source] std::io::Error),
    #[error("compressing the config drive")]
    Gzip(#[source] std::io::Error),
}

/// What a host's config drive is made from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigDriveInput {
    /// The BareMetalHost's `metadata.uid` (cloud-init's instance-id).
    pub uuid: String,
    /// The BareMetalHost's name (`metal3-name`, `name`).
    pub name: String,
    /// The BareMetalHost's namespace (`metal3-namespace`).
    pub namespace: String,
    /// `local-hostname` / `local_hostname`. baremetal-operator uses the host's name.
    pub hostname: String,
    /// The userData Secret's `userData` (or `value`) bytes.
    pub user_data: Option<Vec<u8>>,
    /// The networkData Secret, parsed (see [`parse_secret_map`]).
    pub network_data: Option<Map<String, Value>>,
    /// The metaData Secret, parsed; merged over the defaults.
    pub meta_data: Option<Map<String, Value>>,
}

/// One file of the drive: its path inside the filesystem and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveFile {
    pub path: String,
    pub contents: Vec<u8>,
}

/// Parses a networkData or metaData Secret's text as baremetal-operator does (YAML, which
/// includes JSON) into a mapping. Empty text means "not given" (`None`), as in
/// baremetal-operator.
pub fn parse_secret_map(
    what: &'static str,
    text: &[u8],
) -> Result<Option<Map<String, Value>>, ConfigDriveError> {
    if text.len() > MAX_SECRET {
        return Err(ConfigDriveError::TooLarge {
            what,
            size: text.len(),
            limit: MAX_SECRET,
        });
    }
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value =
        serde_yaml::from_slice(text).map_err(|source| ConfigDriveError::Yaml { what, source })?;
    match value {
        Value::Object(map) => Ok(Some(map)),
        Value::Null => Ok(None),
        other => Err(ConfigDriveError::NotAMap {
            what,
            found: kind(&other).into(),
        }),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// `meta_data.json`'s contents: baremetal-operator's defaults with the metaData Secret's
/// keys merged over them.
pub fn meta_data(input: &ConfigDriveInput) -> Result<Map<String, Value>, ConfigDriveError> {
    let mut md = Map::new();
    let s = |v: &str| Value::String(v.to_owned());
    md.insert("uuid".into(), s(&input.uuid));
    md.insert("metal3-namespace".into(), s(&input.namespace));
    md.insert("metal3-name".into(), s(&input.name));
    md.insert("local-hostname".into(), s(&input.hostname));
    md.insert("local_hostname".into(), s(&input.hostname));
    md.insert("name".into(), s(&input.name));
    if let Some(extra) = &input.meta_data {
        for (k, v) in extra {
            md.insert(k.clone(), v.clone());
        }
    }
    // cloud-init refuses a drive without a uuid ("No 'uuid' entry in metadata").
    match md.get("uuid") {
        Some(Value::String(u)) if !u.is_empty() => Ok(md),
        _ => Err(ConfigDriveError::Missing("meta_data uuid")),
    }
}

/// The drive's files, in the order they are written (pure: no filesystem yet).
pub fn files(input: &ConfigDriveInput) -> Result<Vec<DriveFile>, ConfigDriveError> {
    let md = serde_json::to_vec(&meta_data(input)?).map_err(|source| ConfigDriveError::Json {
        what: "meta_data.json",
        source,
    })?;
    check_size("meta_data.json", md.len(), MAX_META_DATA)?;
    let nd = match &input.network_data {
        Some(nd) => {
            let bytes = serde_json::to_vec(nd).map_err(|source| ConfigDriveError::Json {
                what: "network_data.json",
                source,
            })?;
            check_size("network_data.json", bytes.len(), MAX_NETWORK_DATA)?;
            Some(bytes)
        }
        None => None,
    };
    if let Some(ud) = &input.user_data {
        check_size("user data", ud.len(), MAX_USER_DATA)?;
    }
    let mut out = Vec::new();
    for v in VERSIONS {
        let dir = format!("openstack/{v}");
        out.push(DriveFile {
            path: format!("{dir}/meta_data.json"),
            contents: md.clone(),
        });
        if let Some(nd) = &nd {
            out.push(DriveFile {
                path: format!("{dir}/network_data.json"),
                contents: nd.clone(),
            });
        }
        // Ironic skips empty user data (`if user_data:`); so do we.
        if let Some(ud) = input.user_data.as_ref().filter(|u| !u.is_empty()) {
            out.push(DriveFile {
                path: format!("{dir}/user_data"),
                contents: ud.clone(),
            });
        }
    }
    Ok(out)
}

fn check_size(what: &'static str, size: usize, limit: usize) -> Result<(), ConfigDriveError> {
    if size > limit {
        return Err(ConfigDriveError::TooLarge { what, size, limit });
    }
    Ok(())
}

/// Size of the filesystem for `files`: contents, a cluster of slack per file and per
/// directory, and 1 MiB for FAT structures, rounded up to whole MiB.
fn image_size(files: &[DriveFile]) -> usize {
    const MIB: usize = 1 << 20;
    let content: usize = files.iter().map(|f| f.contents.len()).sum();
    let raw = content + (files.len() + VERSIONS.len() + 1) * 4096 + MIB;
    raw.div_ceil(MIB) * MIB
}

/// Builds the config drive: a VFAT filesystem labelled `config-2` holding the files of
/// [`files`], as bytes (a whole filesystem image, to be written into a partition).
pub fn build(input: &ConfigDriveInput) -> Result<Vec<u8>, ConfigDriveError> {
    let files = files(input)?;
    let size = image_size(&files);
    check_size("config drive image", size, MAX_IMAGE)?;
    let mut img = vec![0u8; size];
    let mut label = [b' '; 11];
    label[..LABEL.len()].copy_from_slice(LABEL.as_bytes());
    fatfs::format_volume(
        Cursor::new(&mut img[..]),
        FormatVolumeOptions::new().volume_label(label),
    )
    .map_err(ConfigDriveError::Fat)?;
    {
        let fs = FileSystem::new(Cursor::new(&mut img[..]), FsOptions::new())
            .map_err(ConfigDriveError::Fat)?;
        {
            let root = fs.root_dir();
            root.create_dir("openstack")
                .map_err(ConfigDriveError::Fat)?;
            for v in VERSIONS {
                root.create_dir(&format!("openstack/{v}"))
                    .map_err(ConfigDriveError::Fat)?;
            }
            for f in &files {
                let mut file = root.create_file(&f.path).map_err(ConfigDriveError::Fat)?;
                file.truncate().map_err(ConfigDriveError::Fat)?;
                file.write_all(&f.contents).map_err(ConfigDriveError::Fat)?;
                file.flush().map_err(ConfigDriveError::Fat)?;
            }
        }
        fs.unmount().map_err(ConfigDriveError::Fat)?;
    }
    Ok(img)
}

/// Encodes a filesystem image as Ironic's `configdrive` field carries it: gzip, then
/// standard base64 (with padding, no line breaks).
pub fn encode(fs: &[u8]) -> Result<String, ConfigDriveError> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(fs).map_err(ConfigDriveError::Gzip)?;
    let compressed = gz.finish().map_err(ConfigDriveError::Gzip)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(compressed))
}

/// Reads back every file of a config drive image (for tests and diagnostics): path and
/// contents, directories walked depth-first in name order.
pub fn read_back(img: &[u8]) -> std::io::Result<Vec<DriveFile>> {
    let fs = FileSystem::new(Cursor::new(img.to_vec()), FsOptions::new())?;
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), fs.root_dir())];
    while let Some((prefix, dir)) = stack.pop() {
        let mut entries: Vec<_> = dir.iter().collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| std::cmp::Reverse(e.file_name()));
        for e in entries {
            let name = e.file_name();
            if name == "." || name == ".." {
                continue;
            }
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if e.is_dir() {
                stack.push((path, e.to_dir()));
            } else {
                let mut contents = Vec::new();
                e.to_file().read_to_end(&mut contents)?;
                out.push(DriveFile { path, contents });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The volume label in the image's boot sector, trimmed.
pub fn volume_label(img: &[u8]) -> std::io::Result<String> {
    let fs = FileSystem::new(Cursor::new(img.to_vec()), FsOptions::new())?;
    Ok(fs.volume_label().trim_end().to_owned())
}

#[cfg(test)]
mod tests;
