//! Tests of the kubernetes part (see workers/src/).
