//! The ACPI power button: what a BMC's graceful shutdown (Redfish `GracefulShutdown`, IPMI
//! `chassis power soft`) presses. The ramdisk has no systemd-logind or acpid to hear it, so the
//! agent does: it reads the button's input events (evdev) and powers the machine off cleanly.
//! Without this, every graceful power-off of a host in the ramdisk waits out the controller's
//! soft power-off timeout and ends hard.

use std::io::Read;
use std::path::{Path, PathBuf};

/// `EV_KEY` (<uapi/linux/input-event-codes.h>).
const EV_KEY: u16 = 0x01;
/// `KEY_POWER`.
const KEY_POWER: u16 = 116;
/// `sizeof(struct input_event)` on 64-bit Linux: a 16-byte timeval, type, code, value.
pub const EVENT_SIZE: usize = 24;

/// Whether one `struct input_event` (64-bit layout) is the power key going down.
pub fn is_power_press(ev: &[u8; EVENT_SIZE]) -> bool {
    let ty = u16::from_ne_bytes([ev[16], ev[17]]);
    let code = u16::from_ne_bytes([ev[18], ev[19]]);
    let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
    ty == EV_KEY && code == KEY_POWER && value == 1
}

/// The event devices (`/dev/input/eventN`) of every input device that can send `KEY_POWER`
/// and is a power button (the ACPI "Power Button" devices; keyboards also have the key, and
/// are left alone). `sys_input` is `/sys/class/input`.
pub fn find(sys_input: &Path, dev_input: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(sys_input) else {
        return found;
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("event"))
        .collect();
    names.sort();
    for ev in names {
        let dev = sys_input.join(&ev).join("device");
        let name = std::fs::read_to_string(dev.join("name")).unwrap_or_default();
        let keys = std::fs::read_to_string(dev.join("capabilities/key")).unwrap_or_default();
        if name.trim() == "Power Button" && has_key(&keys, KEY_POWER) {
            found.push(dev_input.join(&ev));
        }
    }
    found
}

/// Whether a sysfs key bitmap (`capabilities/key`: hex words, most significant first, each
/// as wide as a C long) has bit `key` set.
pub fn has_key(bitmap: &str, key: u16) -> bool {
    let words: Vec<&str> = bitmap.split_whitespace().collect();
    let (word, bit) = (key as usize / 64, key as usize % 64);
    let Some(w) = words.len().checked_sub(1 + word).map(|i| words[i]) else {
        return false;
    };
    u64::from_str_radix(w, 16).is_ok_and(|v| v >> bit & 1 == 1)
}

/// Blocks reading `dev` until the power key is pressed; returns an error if the device fails.
pub fn wait_press(dev: &Path) -> std::io::Result<()> {
    let mut f = std::fs::File::open(dev)?;
    let mut ev = [0u8; EVENT_SIZE];
    loop {
        f.read_exact(&mut ev)?;
        if is_power_press(&ev) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ty: u16, code: u16, value: i32) -> [u8; EVENT_SIZE] {
        let mut ev = [0u8; EVENT_SIZE];
        ev[..8].copy_from_slice(&1_700_000_000i64.to_ne_bytes());
        ev[16..18].copy_from_slice(&ty.to_ne_bytes());
        ev[18..20].copy_from_slice(&code.to_ne_bytes());
        ev[20..24].copy_from_slice(&value.to_ne_bytes());
        ev
    }

    #[test]
    fn only_the_power_key_going_down_is_a_press() {
        assert!(is_power_press(&event(EV_KEY, KEY_POWER, 1)));
        assert!(!is_power_press(&event(EV_KEY, KEY_POWER, 0)), "release");
        assert!(!is_power_press(&event(EV_KEY, KEY_POWER, 2)), "autorepeat");
        assert!(!is_power_press(&event(EV_KEY, 30, 1)), "another key");
        assert!(!is_power_press(&event(0, 0, 0)), "EV_SYN");
        assert!(!is_power_press(&[0xff; EVENT_SIZE]));
    }

    #[test]
    fn key_bitmaps_as_sysfs_prints_them() {
        // The ACPI power button: KEY_POWER (116) only, printed as one word.
        assert!(has_key("10000000000000 0", KEY_POWER));
        assert!(!has_key("10000000000000 0", 115));
        assert!(!has_key("10000000000000 0", 4));
        // A keyboard's map spans several words; bit 116 is in the second word from the end.
        assert!(has_key("ffffffff 10000000000000 ffff", KEY_POWER));
        assert!(!has_key("", KEY_POWER));
        assert!(!has_key("zz 0", KEY_POWER));
    }

    #[test]
    fn finds_power_buttons_not_keyboards() {
        let sys = tempfile::tempdir().unwrap();
        let mk = |ev: &str, name: &str, keys: &str| {
            let d = sys.path().join(ev).join("device");
            std::fs::create_dir_all(d.join("capabilities")).unwrap();
            std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
            std::fs::write(d.join("capabilities/key"), format!("{keys}\n")).unwrap();
        };
        mk("event0", "Power Button", "10000000000000 0");
        mk(
            "event1",
            "AT Translated Set 2 keyboard",
            "ffffffff 10000000000000 ffff",
        );
        mk("event2", "Sleep Button", "4000 0 0");
        mk("event3", "Power Button", "0");
        std::fs::create_dir_all(sys.path().join("mouse0")).unwrap();
        let found = find(sys.path(), Path::new("/dev/input"));
        assert_eq!(found, [PathBuf::from("/dev/input/event0")]);
        assert!(find(Path::new("/nonexistent"), Path::new("/dev/input")).is_empty());
    }

    #[test]
    fn wait_press_returns_on_the_press_and_fails_on_a_short_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("event0");
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&event(EV_KEY, 30, 1));
        bytes.extend_from_slice(&event(0, 0, 0));
        bytes.extend_from_slice(&event(EV_KEY, KEY_POWER, 1));
        std::fs::write(&f, &bytes).unwrap();
        wait_press(&f).unwrap();
        std::fs::write(&f, &bytes[..EVENT_SIZE + 5]).unwrap();
        assert!(wait_press(&f).is_err());
    }
}
