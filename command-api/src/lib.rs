//! The HTTP write side of Ordo
