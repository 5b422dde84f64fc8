//! Cross-process integration and end-to-end tests of Ordo
