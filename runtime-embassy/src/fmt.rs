//! One logging layer: the core's events go to `defmt` on a device and to
//! `log` on a host, with the same words (the event renders itself once, see
//! `outage_core::render`). Like embassy's own `fmt.rs`, the macros forward
//! literal format strings; only `{}` with integers and `&str` is used, which
//! both backends print alike.

#[cfg(all(feature = "defmt", feature = "log"))]
compile_error!("features `defmt` and `log` are mutually exclusive: `defmt` for firmware, `log` for hosts");

#[allow(unused_macros)]
macro_rules! debug {
    ($s:literal $(, $x:expr)* $(,)?) => {{
        #[cfg(feature = "defmt")]
        ::defmt::debug!($s $(, $x)*);
        #[cfg(feature = "log")]
        ::log::debug!(target: "outage", $s $(, $x)*);
        #[cfg(not(any(feature = "defmt", feature = "log")))]
        let _ = ($( & $x ),*);
    }};
}

macro_rules! info {
    ($s:literal $(, $x:expr)* $(,)?) => {{
        #[cfg(feature = "defmt")]
        ::defmt::info!($s $(, $x)*);
        #[cfg(feature = "log")]
        ::log::info!(target: "outage", $s $(, $x)*);
        #[cfg(not(any(feature = "defmt", feature = "log")))]
        let _ = ($( & $x ),*);
    }};
}

#[allow(unused_imports)]
pub(crate) use {debug, info};

use outage_core::Event;

/// Log one event at its level, with its one rendering.
pub fn emit(event: &Event<'_>) {
    #[cfg(feature = "defmt")]
    match event.level() {
        outage_core::Level::Error => defmt::error!("{}", event),
        outage_core::Level::Warn => defmt::warn!("{}", event),
        outage_core::Level::Info => defmt::info!("{}", event),
    }
    #[cfg(feature = "log")]
    {
        let level = match event.level() {
            outage_core::Level::Error => log::Level::Error,
            outage_core::Level::Warn => log::Level::Warn,
            outage_core::Level::Info => log::Level::Info,
        };
        log::log!(target: "outage", level, "{}", event);
    }
    #[cfg(not(any(feature = "defmt", feature = "log")))]
    let _ = event;
}
