//! `kubectl get bmh` output without kubectl: the same columns (from the CRD's
//! additionalPrinterColumns), the same AGE format and the same tab alignment, for the
//! standalone mode where no API server prints tables for us.
//!
//! Column order is kubectl's: NAME first, then the printer columns in CRD order, dropping those
//! with priority > 0 unless `wide`. Alignment is kubectl's tabwriter (minimum width 6,
//! padding 3, the last column unpadded). Missing values print as empty cells, as kubectl does
//! for custom resources.

use k8s_openapi::jiff::Timestamp;

use crate::bmh::BareMetalHost;

/// One printer column: header and whether it is wide-only (priority 1).
struct Column {
    header: &'static str,
    wide_only: bool,
    cell: fn(&BareMetalHost, Timestamp) -> String,
}

/// metal3's printer columns in CRD order, NAME in front as kubectl adds it.
const COLUMNS: [Column; 8] = [
    Column {
        header: "NAME",
        wide_only: false,
        cell: |h, _| h.metadata.name.clone().unwrap_or_default(),
    },
    Column {
        header: "STATUS",
        wide_only: true,
        cell: |h, _| {
            h.status
                .as_ref()
                .map(|s| s.operational_status.as_str().to_owned())
                .unwrap_or_default()
        },
    },
    Column {
        header: "STATE",
        wide_only: false,
        cell: |h, _| {
            h.status
                .as_ref()
                .map(|s| s.provisioning.state.as_str().to_owned())
                .unwrap_or_default()
        },
    },
    Column {
        header: "CONSUMER",
        wide_only: false,
        cell: |h, _| {
            h.spec
                .consumer_ref
                .as_ref()
                .and_then(|c| c.name.clone())
                .unwrap_or_default()
        },
    },
    Column {
        header: "BMC",
        wide_only: true,
        cell: |h, _| {
            h.spec
                .bmc
                .as_ref()
                .map(|b| b.address.clone())
                .unwrap_or_default()
        },
    },
    Column {
        header: "ONLINE",
        wide_only: false,
        cell: |h, _| h.spec.online.to_string(),
    },
    Column {
        header: "ERROR",
        wide_only: false,
        cell: |h, _| {
            h.status
                .as_ref()
                .and_then(|s| s.error_type)
                .map(|e| e.as_str().to_owned())
                .unwrap_or_default()
        },
    },
    Column {
        header: "AGE",
        wide_only: false,
        cell: |h, now| match &h.metadata.creation_timestamp {
            Some(t) => human_duration(now.as_second() - t.0.as_second()),
            None => "<unknown>".to_owned(),
        },
    },
];

/// kubectl's tabwriter settings (`printers.GetNewTabWriter`).
const MIN_WIDTH: usize = 6;
const PADDING: usize = 3;

/// Renders `hosts` as `kubectl get bmh` (or `-o wide`) would, one line per host after the
/// header, each line ending in `\n`.
pub fn table(hosts: &[BareMetalHost], now: Timestamp, wide: bool) -> String {
    let columns: Vec<&Column> = COLUMNS.iter().filter(|c| wide || !c.wide_only).collect();
    let mut rows: Vec<Vec<String>> = Vec::with_capacity(hosts.len() + 1);
    rows.push(columns.iter().map(|c| c.header.to_owned()).collect());
    for h in hosts {
        rows.push(
            columns
                .iter()
                .map(|c| sanitize(&(c.cell)(h, now)))
                .collect(),
        );
    }
    let last = columns.len() - 1;
    let widths: Vec<usize> = (0..last)
        .map(|i| {
            let widest = rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
            (widest + PADDING).max(MIN_WIDTH)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// Values come from the API and could hold anything: keep one host on one line.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// apimachinery's `duration.HumanDuration`, as kubectl prints AGE: two significant units
/// while they matter (`3m12s`, `2h5m`, `2d3h`), one after that.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bmh::{
        BareMetalHostSpec, BareMetalHostStatus, BmcDetails, ErrorType, OperationalStatus,
        ProvisionStatus, ProvisioningState,
    };
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn human_duration_table() {
        let m = 60;
        let h = 3600;
        let d = 24 * h;
        let y = 365 * d;
        let cases: &[(i64, &str)] = &[
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (2 * m, "2m"),
            (3 * m + 12, "3m12s"),
            (9 * m + 59, "9m59s"),
            (10 * m + 30, "10m"),
            (179 * m, "179m"),
            (3 * h, "3h"),
            (5 * h, "5h"),
            (5 * h + 7 * m, "5h7m"),
            (8 * h + 59 * m, "8h"),
            (47 * h, "47h"),
            (2 * d, "2d"),
            (2 * d + 3 * h, "2d3h"),
            (7 * d + 23 * h, "7d23h"),
            (8 * d + 5 * h, "8d"),
            (729 * d, "729d"),
            (2 * y, "2y"),
            (2 * y + 40 * d, "2y40d"),
            (9 * y, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(*secs), *want, "{secs}s");
        }
    }

    fn host(
        name: &str,
        created: i64,
        state: Option<ProvisioningState>,
        consumer: Option<&str>,
        error: Option<ErrorType>,
    ) -> BareMetalHost {
        let mut h = BareMetalHost::new(
            name,
            BareMetalHostSpec {
                online: true,
                bmc: Some(BmcDetails {
                    address: "redfish+http://192.0.2.1:8000/redfish/v1/Systems/1".into(),
                    credentials_name: "bmc".into(),
                    disable_certificate_verification: None,
                }),
                consumer_ref: consumer.map(|c| ObjectReference {
                    name: Some(c.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        h.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        h.status = state.map(|state| BareMetalHostStatus {
            operational_status: if error.is_some() {
                OperationalStatus::Error
            } else {
                OperationalStatus::Ok
            },
            error_type: error,
            provisioning: ProvisionStatus {
                state,
                ..Default::default()
            },
            ..Default::default()
        });
        h
    }

    #[test]
    fn table_matches_kubectl() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let hosts = [
            host(
                "worker-0",
                1_000_000 - 45,
                Some(ProvisioningState::Available),
                None,
                None,
            ),
            host(
                "example-baremetalhost",
                1_000_000 - (2 * 86400 + 3 * 3600),
                Some(ProvisioningState::Registering),
                Some("machine-1"),
                Some(ErrorType::Registration),
            ),
            host("new", 1_000_000 - 192, None, None, None),
        ];
        let cases = [
            (
                false,
                concat!(
                    "NAME                    STATE         CONSUMER    ONLINE   ERROR                AGE\n",
                    "worker-0                available                 true                          45s\n",
                    "example-baremetalhost   registering   machine-1   true     registration error   2d3h\n",
                    "new                                               true                          3m12s\n",
                ),
            ),
            (
                true,
                concat!(
                    "NAME                    STATUS   STATE         CONSUMER    BMC                                                  ONLINE   ERROR                AGE\n",
                    "worker-0                OK       available                 redfish+http://192.0.2.1:8000/redfish/v1/Systems/1   true                          45s\n",
                    "example-baremetalhost   error    registering   machine-1   redfish+http://192.0.2.1:8000/redfish/v1/Systems/1   true     registration error   2d3h\n",
                    "new                                                        redfish+http://192.0.2.1:8000/redfish/v1/Systems/1   true                          3m12s\n",
                ),
            ),
        ];
        for (wide, want) in cases {
            assert_eq!(table(&hosts, now, wide), want, "wide={wide}");
        }
    }

    #[test]
    fn empty_list_prints_header_only() {
        let now = Timestamp::from_second(0).unwrap();
        assert_eq!(
            table(&[], now, false),
            "NAME   STATE   CONSUMER   ONLINE   ERROR   AGE\n"
        );
    }

    #[test]
    fn control_characters_cannot_break_lines() {
        let now = Timestamp::from_second(100).unwrap();
        let h = host("evil\nname", 40, None, None, None);
        let out = table(&[h], now, false);
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(out.contains("evil name"));
    }
}
