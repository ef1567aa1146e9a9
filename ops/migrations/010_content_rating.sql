-- Parental ratings in the catalog (ContentUpserted v3): the rating each source gives,
-- canonical spelling (domain/identity/ratings.py), and the entity's rating, the strictest
-- of its sources'. search_docs.rating (006) is filled from content.rating; NULL: unrated.
ALTER TABLE platform_titles ADD COLUMN IF NOT EXISTS rating text;
ALTER TABLE content ADD COLUMN IF NOT EXISTS rating text;
