//! Tests of the accounts part (see control/src/).
