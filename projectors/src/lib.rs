//! Kafka consumer-group workers that build Ordo read models
