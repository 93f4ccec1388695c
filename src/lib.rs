//! ipto
