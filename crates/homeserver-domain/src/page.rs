//! Pagination of lists: `?page=1&per_page=20`, at most 100 per page.

use crate::error::FieldError;

/// Most items one page may hold.
pub const MAX_PER_PAGE: u32 = 100;

/// A validated page request (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    page: u32,
    per_page: u32,
}

impl Page {
    /// Validates `page ≥ 1` and `1 ≤ per_page ≤ 100`.
    pub fn new(page: u32, per_page: u32) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        if page == 0 {
            errors.push(FieldError::new("page", "must be 1 or more"));
        }
        if per_page == 0 || per_page > MAX_PER_PAGE {
            errors.push(FieldError::new("per_page", format!("must be between 1 and {MAX_PER_PAGE}")));
        }
        if errors.is_empty() { Ok(Self { page, per_page }) } else { Err(errors) }
    }

    /// The page number.
    pub fn page(self) -> u32 {
        self.page
    }

    /// Items per page.
    pub fn per_page(self) -> u32 {
        self.per_page
    }

    /// Items to skip.
    pub fn offset(self) -> u64 {
        u64::from(self.page - 1) * u64::from(self.per_page)
    }
}

impl Default for Page {
    fn default() -> Self {
        Self { page: 1, per_page: 20 }
    }
}

/// One page of a list and the size of the whole list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paged<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Items in the whole list.
    pub total: u64,
    /// Which page.
    pub page: Page,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_offsets() {
        assert_eq!(Page::new(3, 20).unwrap().offset(), 40);
        assert_eq!(Page::new(1, 100).unwrap().per_page(), 100);
        let errs = Page::new(0, 101).unwrap_err();
        assert_eq!(errs.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(), ["page", "per_page"]);
        assert!(Page::new(1, 0).is_err());
    }
}
