//! Tests of the Deployment Listener: the decision function rule by rule (`decision`), its
//! properties over random views (`properties`), and the whole listener over a scripted fake
//! runtime on both backends, MemoryStore + SQLite and Redis + MariaDB, and its loop (`live`);
//! over the real `local` runtime (`local`); 10,000 hints over 500 instances through the
//! sharded loop (`ordering`, TEST-PLAN T70).

mod decision;
mod live;
mod local;
mod ordering;
mod properties;
mod support;
