//! Tests of the accounts part (see control/src/contestant/accounts/): router tests with
//! `oneshot`, each run over SQLite with the in-process store and again over a scratch MariaDB
//! database with the real Redis (a unique key prefix per test).

mod support;

mod admin;
mod auth;
mod hardening;
mod kit;
mod matrix;
mod teams;
