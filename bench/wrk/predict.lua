-- wrk script: POST the body file named by $MNISTKIT_WRK_BODY with $MNISTKIT_WRK_CTYPE to /predict.
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("MNISTKIT_WRK_CTYPE")
local f = assert(io.open(os.getenv("MNISTKIT_WRK_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
