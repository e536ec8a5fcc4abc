//! One logging layer: the core's events go to `defmt` on a device and to
//! `log` on a host, with the same words: every line is an
//! `outage_core::Event`, which renders itself once (`outage_core::render`)
//! into `Display` for `log` and into `defmt::Format` piece by piece.

#[cfg(all(feature = "defmt", feature = "log"))]
compile_error!("features `defmt` and `log` are mutually exclusive: `defmt` for firmware, `log` for hosts");

use outage_core::Event;

/// Log one event at its level, with its one rendering.
///
/// With defmt each level renders through `outage_core::Only` of that level
/// alone, without the host's events: a level `DEFMT_LOG` drops takes its
/// words out of flash with it (an `info` build carries no debug line), and
/// no build carries the lines only a host logs.
pub fn emit(event: &Event<'_>) {
    #[cfg(feature = "defmt")]
    {
        use outage_core::{Only, keep};
        match event.level() {
            outage_core::Level::Error => defmt::error!("{}", Only::<{ keep::ERROR }>(event)),
            outage_core::Level::Warn => defmt::warn!("{}", Only::<{ keep::WARN }>(event)),
            outage_core::Level::Info => defmt::info!("{}", Only::<{ keep::INFO }>(event)),
            outage_core::Level::Debug => defmt::debug!("{}", Only::<{ keep::DEBUG }>(event)),
        }
    }
    #[cfg(feature = "log")]
    {
        let level = match event.level() {
            outage_core::Level::Error => log::Level::Error,
            outage_core::Level::Warn => log::Level::Warn,
            outage_core::Level::Info => log::Level::Info,
            outage_core::Level::Debug => log::Level::Debug,
        };
        log::log!(target: "outage", level, "{}", event);
    }
    #[cfg(not(any(feature = "defmt", feature = "log")))]
    let _ = event;
}
