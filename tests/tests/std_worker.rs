//! The scenario list, run against the host worker (async-std + surf).

outage_tests::scenario_tests!(outage_tests::std_rt::StdRuntime);
outage_tests::panic_scenario_tests!(outage_tests::std_rt::StdRuntime);
