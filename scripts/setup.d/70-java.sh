# Java for Spark: tests/test_spark.py reads the fleet dataset with pyspark (the test extra),
# whose JVM is Debian's OpenJDK 17 (Spark 4 needs 17 or newer).
need_pkgs openjdk-17-jre-headless
