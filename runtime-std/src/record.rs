//! One event as one `log` record: its line (the core's rendering) and its
//! fields ([`outage_core::Event::fields`]) as the record's key-values, so a
//! structured logger (the CLI's `--log-format json`, or any `log` logger
//! that reads key-values) gets `task_id`, `job`, `outcome`, `duration_ms`,
//! `error_class`, … from the same event that wrote the line.

use log::kv::{Source, ToValue, Value, VisitSource};
use outage_core::{Event, FieldSink, Level};

/// A field's value, owned for the length of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FieldValue {
    Text(String),
    Num(u64),
    Flag(bool),
}

impl ToValue for FieldValue {
    fn to_value(&self) -> Value<'_> {
        match self {
            FieldValue::Text(s) => Value::from(s.as_str()),
            FieldValue::Num(n) => Value::from(*n),
            FieldValue::Flag(b) => Value::from(*b),
        }
    }
}

/// An event's fields, collected (only for a record that is logged).
#[derive(Debug, Default)]
pub(crate) struct Fields(pub(crate) Vec<(&'static str, FieldValue)>);

impl FieldSink for Fields {
    fn text(&mut self, key: &'static str, value: &str) {
        self.0.push((key, FieldValue::Text(value.to_owned())));
    }
    fn num(&mut self, key: &'static str, value: u64) {
        self.0.push((key, FieldValue::Num(value)));
    }
    fn flag(&mut self, key: &'static str, value: bool) {
        self.0.push((key, FieldValue::Flag(value)));
    }
    fn shown(&mut self, key: &'static str, value: &dyn std::fmt::Display) {
        self.0.push((key, FieldValue::Text(value.to_string())));
    }
}

impl Fields {
    /// `event` (its name), the event's own fields, and `worker_id` unless
    /// the event names one itself.
    pub(crate) fn of(event: &Event<'_>, worker_id: Option<&str>) -> Fields {
        let mut f = Fields::default();
        f.text("event", event.name());
        event.fields(&mut f);
        if let Some(id) = worker_id.filter(|id| !id.is_empty())
            && !f.0.iter().any(|(k, _)| *k == "worker_id")
        {
            f.text("worker_id", id);
        }
        f
    }
}

impl Source for Fields {
    fn visit<'kvs>(&'kvs self, visitor: &mut dyn VisitSource<'kvs>) -> Result<(), log::kv::Error> {
        for (k, v) in &self.0 {
            visitor.visit_pair(log::kv::Key::from_str(k), v.to_value())?;
        }
        Ok(())
    }
}

/// `log`'s level for an event's.
pub(crate) fn log_level(level: Level) -> log::Level {
    match level {
        Level::Error => log::Level::Error,
        Level::Warn => log::Level::Warn,
        Level::Info => log::Level::Info,
        Level::Debug => log::Level::Debug,
    }
}

/// Log `event` (target `outage`) at its level, with its fields, and with
/// `worker_id` (the worker's current id) as a field when given.
pub(crate) fn emit_as(event: &Event<'_>, worker_id: Option<&str>) {
    let level = log_level(event.level());
    let metadata = log::Metadata::builder().level(level).target("outage").build();
    if level > log::max_level() || !log::logger().enabled(&metadata) {
        return;
    }
    let fields = Fields::of(event, worker_id);
    log::logger().log(
        &log::Record::builder()
            .metadata(metadata)
            .args(format_args!("{event}"))
            .module_path_static(Some(module_path!()))
            .key_values(&fields)
            .build(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use outage_core::Duration;

    #[test]
    fn the_worker_id_is_added_unless_the_event_has_one() {
        let e = Event::TaskFinished {
            task_id: "t-1",
            job: "@global:modifiers:Echo",
            room: "room1",
            took: Duration::from_millis(30),
            error: None,
        };
        let f = Fields::of(&e, Some("w-1"));
        let keys: Vec<&str> = f.0.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "event",
                "task_id",
                "job",
                "room",
                "duration_ms",
                "outcome",
                "worker_id"
            ]
        );
        assert_eq!(f.0[0].1, FieldValue::Text("task_finished".into()));
        assert_eq!(f.0[4].1, FieldValue::Num(30));
        let e = Event::Registered {
            worker_id: "w-2",
            jobs: 1,
        };
        let f = Fields::of(&e, Some("w-1"));
        let ids: Vec<&FieldValue> =
            f.0.iter()
                .filter(|(k, _)| *k == "worker_id")
                .map(|(_, v)| v)
                .collect();
        assert_eq!(ids, [&FieldValue::Text("w-2".into())]);
    }
}
