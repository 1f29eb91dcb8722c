/* Aligned text table for list commands (`memvisor vm ls`): collects rows of
 * strings, then prints them with each column as wide as its widest cell.
 * Column widths come from content, so long names never break alignment.
 * mv_table_print_json makes one from a JSON array, a row per element. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "cli_i.h"

struct mv_table {
	size_t ncols, nrows, cap;
	bool *right;
	char **cells; /* nrows * ncols; row 0 holds the headers */
};

struct mv_table *mv_table_new(size_t ncols, const char *const *headers, const bool *right)
{
	struct mv_table *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->ncols = ncols;
	t->right = calloc(ncols, sizeof(*t->right));
	if (!t->right)
		goto fail;
	if (right)
		memcpy(t->right, right, ncols * sizeof(*right));
	if (mv_table_add(t, headers))
		goto fail;
	return t;
fail:
	mv_table_free(t);
	return NULL;
}

int mv_table_add(struct mv_table *t, const char *const *cells)
{
	if (t->nrows == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 8;
		char **nc = realloc(t->cells, cap * t->ncols * sizeof(*nc));
		if (!nc)
			return -ENOMEM;
		t->cells = nc;
		t->cap = cap;
	}
	char **row = t->cells + t->nrows * t->ncols;
	for (size_t c = 0; c < t->ncols; c++) {
		row[c] = strdup(cells[c] ? cells[c] : "-");
		if (!row[c]) {
			while (c--)
				free(row[c]);
			return -ENOMEM;
		}
	}
	t->nrows++;
	return 0;
}

void mv_table_print(const struct mv_table *t, FILE *f)
{
	size_t *w = calloc(t->ncols, sizeof(*w));
	if (!w)
		return;
	for (size_t r = 0; r < t->nrows; r++)
		for (size_t c = 0; c < t->ncols; c++) {
			size_t n = strlen(t->cells[r * t->ncols + c]);
			if (n > w[c])
				w[c] = n;
		}
	for (size_t r = 0; r < t->nrows; r++) {
		for (size_t c = 0; c < t->ncols; c++) {
			const char *s = t->cells[r * t->ncols + c];
			bool last = c + 1 == t->ncols;
			if (t->right[c])
				fprintf(f, "%*s", (int)w[c], s);
			else if (last) /* no trailing blanks */
				fputs(s, f);
			else
				fprintf(f, "%-*s", (int)w[c], s);
			fputs(last ? "\n" : "  ", f);
		}
	}
	free(w);
}

void mv_table_free(struct mv_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t->right);
	free(t);
}

const char *mv_table_num(char *cell, long long v)
{
	snprintf(cell, MV_TABLE_CELL, "%lld", v);
	return cell;
}

int mv_table_print_json(const json_t *arr, size_t ncols, const char *const *headers,
			const bool *right, mv_table_row_fn row)
{
	struct mv_table *t = mv_table_new(ncols, headers, right);
	const char *cells[MV_TABLE_MAX_COLS];
	char buf[MV_TABLE_MAX_COLS][MV_TABLE_CELL];
	size_t i;
	const json_t *el;
	int ret = t && ncols <= MV_TABLE_MAX_COLS ? 0 : -ENOMEM;
	json_array_foreach(arr, i, el) {
		if (ret)
			break;
		memset(cells, 0, sizeof(cells));
		row(el, cells, buf);
		ret = mv_table_add(t, cells);
	}
	if (ret)
		mv_cli_err("out of memory");
	else
		mv_table_print(t, stdout);
	mv_table_free(t);
	return ret ? MV_CLI_FAIL : MV_CLI_OK;
}
