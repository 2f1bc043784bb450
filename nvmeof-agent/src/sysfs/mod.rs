//! Parsers: a sysfs root → typed structs. Pure functions of the tree, so tests point them at
//! fixture trees captured from the lab.
