//! Unit tests of the dialplan language.
