//! The scenario list, run against the embassy worker on the host (embassy's
//! std executor, embassy-time's std driver, TCP through
//! std-embedded-nal-async). The same list as `std_worker.rs`.

outage_tests::scenario_tests!(outage_tests::embassy_rt::EmbassyRuntime);
