#!/usr/bin/env Rscript
# Reference outputs of R longCombat (github.com/jcbeer/longCombat, commit 9b3cc36) for
# imharmony's LongitudinalComBat parity tests. See README.md next to this file.
#
# Simulates one longitudinal data set (fixed set.seed): subjects with 1 to 5 visits at irregular
# times (unbalanced), some subjects changing scanner between visits, age, a diagnosis with its own
# slope in time, subject random intercepts and slopes, additive and multiplicative batch effects.
# Feature f01 has no subject variance at all (singular fits), f02 no random-slope variance.
# Runs longCombat() (sourced from R/longCombat.R; it needs only lme4) for every case and writes
#   fixtures/data.csv                subid, time, batch, age, diagnosis, f01 ... (%.17g)
#   fixtures/<case>/expected.csv     the harmonized features (data_combat, same rows)
#   fixtures/cases.json, fixtures/VERSIONS.txt
# The case "bench_slope" reads fixtures/bench_data.csv instead: 25 subjects x 4 visits x 50
# features written by benchmarks/bench_combat_family.py's generator (see README.md), on which a
# sign-bounded search of the random-slope REML criterion stops in a false minimum.
#
# Run: LONGCOMBAT=<checkout of jcbeer/longCombat> Rscript make_fixtures.R

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})
source(file.path(Sys.getenv("LONGCOMBAT"), "R", "longCombat.R"))

script_dir <- function() {
  args <- commandArgs(trailingOnly = FALSE)
  file <- sub("^--file=", "", args[grep("^--file=", args)])
  if (length(file) == 1) dirname(normalizePath(file)) else getwd()
}
FIXTURES <- file.path(script_dir(), "fixtures")
fmt17 <- function(x) sprintf("%.17g", x)

write_csv17 <- function(df, path) {
  cols <- lapply(df, function(x) if (is.numeric(x)) fmt17(x) else as.character(x))
  body <- do.call(paste, c(cols, sep = ","))
  writeLines(c(paste(names(df), collapse = ","), body), path)
  back <- read.csv(path, check.names = FALSE, stringsAsFactors = FALSE)
  for (k in names(df)) if (!identical(back[[k]], df[[k]])) stop(path, ": column ", k, " does not read back")
}

set.seed(2020)
n_subjects <- 45
n_features <- 10
visits <- sample(1:5, n_subjects, replace = TRUE)
subid <- rep(sprintf("s%02d", seq_len(n_subjects)), visits)
time <- unlist(lapply(visits, function(v) c(0, cumsum(runif(v - 1, 0.5, 1.5)))))
site0 <- sample(c("scanA", "scanB", "scanC"), n_subjects, replace = TRUE, prob = c(0.4, 0.35, 0.25))
switch_at <- ifelse(runif(n_subjects) < 0.3, 2, 99)  # 30% change scanner from their 2nd visit
visit_no <- unlist(lapply(visits, seq_len))
batch <- rep(site0, visits)
moved <- visit_no >= rep(switch_at, visits)
batch[moved] <- ifelse(batch[moved] == "scanA", "scanB", "scanA")
age0 <- round(runif(n_subjects, 55, 85), 1)
age <- rep(age0, visits) + time
diagnosis <- rep(sample(c("AD", "CN", "MCI"), n_subjects, replace = TRUE), visits)
L <- length(subid)
subj <- match(subid, unique(subid))

x <- matrix(0, L, n_features)
b_shift <- matrix(rnorm(3 * n_features, 0, 1.5), 3, n_features)
b_scale <- matrix(runif(3 * n_features, 0.6, 1.8), 3, n_features)
bcode <- match(batch, c("scanA", "scanB", "scanC"))
for (v in seq_len(n_features)) {
  sd_int <- if (v == 1) 0 else runif(1, 0.5, 2)
  sd_slope <- if (v <= 2) 0 else runif(1, 0.1, 0.6)
  u0 <- rnorm(n_subjects, 0, sd_int)
  u1 <- rnorm(n_subjects, 0, sd_slope)
  mean_v <- 10 + 0.05 * age - 0.8 * (diagnosis == "AD") - 0.4 * (diagnosis == "MCI") +
    (-0.3 * (diagnosis == "AD") - 0.1) * time
  x[, v] <- mean_v + u0[subj] + u1[subj] * time + b_shift[bcode, v] +
    b_scale[bcode, v] * rnorm(L, 0, 1)
}
colnames(x) <- sprintf("f%02d", seq_len(n_features))
data <- data.frame(subid = subid, time = time, batch = batch, age = age, diagnosis = diagnosis,
                   stringsAsFactors = FALSE)
data <- cbind(data, as.data.frame(x))
dir.create(FIXTURES, showWarnings = FALSE)
write_csv17(data, file.path(FIXTURES, "data.csv"))
read_data <- function(file) {
  d <- read.csv(file.path(FIXTURES, file), stringsAsFactors = FALSE)
  d$batch <- factor(d$batch)
  d
}

CASES <- list(
  list(name = "intercept_reml", ranef = "(1|subid)", method = "REML"),
  list(name = "intercept_msr", ranef = "(1|subid)", method = "MSR"),
  list(name = "slope_reml", ranef = "(1 + time|subid)", method = "REML"),
  list(name = "bench_slope", ranef = "(1 + time|subid)", method = "REML", data = "bench_data.csv")
)
FORMULA <- "age + diagnosis*time"
specs <- list()
for (case in CASES) {
  file <- if (is.null(case$data)) "data.csv" else case$data
  data <- read_data(file)
  features <- grep("^f[0-9]", names(data), value = TRUE)
  singular <- character(0)
  out <- withCallingHandlers(
    longCombat(idvar = "subid", timevar = "time", batchvar = "batch", features = features,
               formula = FORMULA, ranef = case$ranef, data = data, method = case$method,
               verbose = FALSE),
    message = function(m) {
      singular <<- c(singular, conditionMessage(m))
      invokeRestart("muffleMessage")
    })
  # which features have singular fits (same call as longCombat, with the same optimizer)
  sing <- vapply(features, function(f) {
    fit <- lmer(as.formula(paste0(f, "~", FORMULA, "+batch+", case$ranef)), data = data,
                REML = TRUE, control = lmerControl(optimizer = "bobyqa"))
    isSingular(fit)
  }, logical(1))
  expected <- out$data_combat[, paste0(features, ".combat")]
  colnames(expected) <- features
  dir <- file.path(FIXTURES, case$name)
  dir.create(dir, showWarnings = FALSE)
  write_csv17(expected, file.path(dir, "expected.csv"))
  specs[[length(specs) + 1]] <- list(
    name = case$name, data = file, formula = FORMULA, ranef = case$ranef, method = case$method,
    random = if (grepl("time", case$ranef)) "slope" else "intercept",
    n_visits = nrow(data), n_subjects = length(unique(data$subid)),
    n_features = length(features),
    singular_features = I(features[sing])
  )
  cat(case$name, ": singular fits in", paste(features[sing], collapse = " "), "\n")
}
writeLines(toJSON(specs, auto_unbox = TRUE, pretty = TRUE, digits = NA),
           file.path(FIXTURES, "cases.json"))
writeLines(c(
  paste("R:", R.version.string),
  "longCombat: 0.0.0.90000 (jcbeer/longCombat commit 9b3cc36e427c728f83120180647d64a2cc753a12)",
  paste("lme4:", as.character(packageVersion("lme4"))),
  paste("Matrix:", as.character(packageVersion("Matrix"))),
  paste("BLAS:", basename(extSoftVersion()[["BLAS"]])),
  paste("LAPACK:", basename(La_library()))
), file.path(FIXTURES, "VERSIONS.txt"))
