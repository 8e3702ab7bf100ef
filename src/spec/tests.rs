//! Table-driven tests of the whole pipeline through [`prepare`].
use super::*;
