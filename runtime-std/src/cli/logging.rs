//! The command's logger: text lines, or one JSON object per line with the
//! event's fields as keys (`--log-format json`).

use std::io::Write;

use log::kv::{Key, Value, VisitSource};

/// `RUST_LOG` when unset.
pub const DEFAULT_FILTER: &str = "warn,outage=info";

/// WebSocket libraries whose lines stay at debug or above, whatever
/// `RUST_LOG` says (their trace lines show every frame, the push CONNECT
/// with the token included), and below what `RUST_LOG` gives them.
const FRAME_LIBRARIES: [&str; 2] = ["tungstenite", "async_tungstenite"];

/// The most detailed level `filter` lets through for `target`.
fn level_for(filter: &env_logger::Logger, target: &str) -> log::LevelFilter {
    use log::Level::*;
    [Trace, Debug, Info, Warn, Error]
        .into_iter()
        .find(|l| filter.matches(&log::Record::builder().level(*l).target(target).build()))
        .map_or(log::LevelFilter::Off, |l| l.to_level_filter())
}

/// The level each frame library gets from `filters` (`RUST_LOG`'s
/// syntax), never below debug.
pub fn frame_levels(filters: &str) -> Vec<(&'static str, log::LevelFilter)> {
    let probe = env_logger::Builder::new().parse_filters(filters).build();
    FRAME_LIBRARIES
        .iter()
        .map(|m| (*m, level_for(&probe, m).min(log::LevelFilter::Debug)))
        .collect()
}

/// One record as a JSON object: `ts`, `level`, `target`, `message`, then
/// the record's key-values (an event's fields) as keys of their own.
pub fn json_line(ts: &str, record: &log::Record<'_>) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    map.insert("ts".into(), ts.into());
    map.insert("level".into(), record.level().as_str().into());
    map.insert("target".into(), record.target().into());
    map.insert("message".into(), record.args().to_string().into());
    struct Keys<'m>(&'m mut serde_json::Map<String, serde_json::Value>);
    impl<'kvs> VisitSource<'kvs> for Keys<'_> {
        fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
            let v = if let Some(b) = value.to_bool() {
                serde_json::Value::Bool(b)
            } else if let Some(n) = value.to_u64() {
                serde_json::Value::from(n)
            } else {
                serde_json::Value::String(value.to_string())
            };
            // The line's own keys stay the line's.
            self.0.entry(key.as_str().to_owned()).or_insert(v);
            Ok(())
        }
    }
    let _ = record.key_values().visit(&mut Keys(&mut map));
    serde_json::Value::Object(map)
}

/// Install the logger: `RUST_LOG` (default [`DEFAULT_FILTER`]), text or JSON.
pub fn init(json: bool) {
    let filters = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| !f.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_FILTER.to_owned());
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(&filters);
    for (module, level) in frame_levels(&filters) {
        builder.filter_module(module, level);
    }
    if json {
        builder.format(|buf, record| {
            let ts = buf.timestamp_millis().to_string();
            writeln!(buf, "{}", json_line(&ts, record))
        });
    } else {
        builder.format(|buf, record| {
            let ts = buf.timestamp_seconds();
            writeln!(buf, "{ts} {:<5} {}", record.level(), record.args())
        });
    }
    builder.init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::LevelFilter::*;

    #[test]
    fn frame_libraries_never_log_below_debug_nor_above_what_rust_log_says() {
        let at = |f: &str| frame_levels(f).into_iter().map(|(_, l)| l).collect::<Vec<_>>();
        assert_eq!(at(DEFAULT_FILTER), [Warn, Warn]);
        assert_eq!(at("info"), [Info, Info], "no DEBUG line at info");
        assert_eq!(at("debug"), [Debug, Debug]);
        assert_eq!(at("trace"), [Debug, Debug], "never the frames");
        assert_eq!(at("info,tungstenite=trace"), [Debug, Info]);
    }

    #[test]
    fn fields_become_keys() {
        let kvs: [(&str, Value<'_>); 3] = [
            ("task_id", Value::from("t-1")),
            ("duration_ms", Value::from(30u64)),
            ("was_up", Value::from(true)),
        ];
        let record = log::Record::builder()
            .level(log::Level::Info)
            .target("outage")
            .args(format_args!("Task t-1 completed in 30ms"))
            .key_values(&kvs)
            .build();
        let v = json_line("2026-01-01T00:00:00.000Z", &record);
        assert_eq!(v["task_id"], "t-1");
        assert_eq!(v["duration_ms"], 30);
        assert_eq!(v["was_up"], true);
        assert_eq!(v["message"], "Task t-1 completed in 30ms");
        assert_eq!(v["level"], "INFO");
    }
}
