//! The HTTP read side of Ordo and its audit endpoints
