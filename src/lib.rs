//! wardhook: a self-hosted webhook receiver.
