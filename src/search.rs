//! Search: the query language, text extraction, the local tantivy index and the indexer that keeps
//! it in step with the log.

pub mod extract;
pub mod index;
pub mod indexer;
pub mod query;

pub use index::{Hit, IndexError, SearchIndex};
pub use indexer::{Indexer, NAME};
