//! Tests of the play part (see control/src/contestant/play/): router tests with `oneshot` over
//! SQLite, and the race cases again over a real MariaDB (a scratch database per test) and a real
//! Redis (a unique key prefix per test).

mod support;

mod content;
mod instances;
mod methods;
mod races;
mod scoring;
mod submissions;
mod uploads;
