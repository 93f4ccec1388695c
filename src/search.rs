//! Search: the query language, text extraction, the local tantivy index and the indexer that keeps
//! it in step with the log.

pub mod dense;
pub mod embed;
pub mod embedding;
pub mod extract;
pub mod index;
pub mod indexer;
pub mod query;
pub mod retrieval;

pub use index::{Hit, IndexError, SearchIndex};
pub use indexer::{Indexer, NAME};
