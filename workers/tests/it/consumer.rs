//! Tests of the consumer part (see workers/src/).
